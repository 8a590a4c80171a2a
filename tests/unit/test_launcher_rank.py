"""A training process's exit (`kubetune.launcher.rank`): a finished run is not aborted by C++ teardown.

torch's teardown fault is a race (a C++ object destroyed at exit with a thread never joined); here it is
made certain: LLaMA-Factory's `run_exp` is stood in for by one that registers libc's abort as a C exit
handler, where C++ static destructors run. What the real run does on two nodes is tests/worker's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.operator_fixtures import REPO

# run_exp as the module that `python -m llamafactory.launcher` imports: it trains (prints, unflushed, as
# output to a pipe stays until the exit), leaves a thread still working (an upload to the hub), a Python
# exit function (an experiment tracker's, say), and a C exit handler that aborts, as torch's destroyed
# thread does.
STAND_IN = """
import atexit, ctypes, sys, threading, time
from pathlib import Path

def run_exp():
    config = Path(sys.argv[1])
    sys.stdout.write("trained on " + config.name)
    atexit.register(lambda: (config.parent / "tracker-finished").write_text("yes"))
    upload = lambda: (time.sleep(0.2), (config.parent / "uploaded").write_text("yes"))
    threading.Thread(target=upload).start()
    libc = ctypes.CDLL(None)
    libc.__cxa_atexit(ctypes.cast(libc.abort, ctypes.c_void_p), None, None)
"""


def stand_in(tmp_path: Path) -> dict[str, str]:
    package = tmp_path / "site" / "llamafactory" / "train"
    package.mkdir(parents=True)
    (package.parent / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "tuner.py").write_text(STAND_IN)
    (tmp_path / "train.yaml").write_text("stage: sft\n")
    path = os.pathsep.join([str(tmp_path / "site"), str(REPO / "operator")])
    return {**os.environ, "PYTHONPATH": path}


def run(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv, str(tmp_path / "train.yaml")],
        env=stand_in(tmp_path), capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip


def test_a_finished_run_exits_0_where_the_interpreters_own_exit_aborts(tmp_path: Path) -> None:
    plain = run(tmp_path / "plain", "-c", "from llamafactory.train.tuner import run_exp; run_exp()")
    assert plain.returncode == -signal.SIGABRT  # the hazard, as the stand-in makes it

    rank = run(tmp_path / "rank", "-m", "kubetune.launcher.rank")
    assert rank.returncode == 0, rank.stderr
    assert rank.stdout == "trained on train.yaml"  # what it wrote is flushed
    assert (tmp_path / "rank" / "tracker-finished").read_text() == "yes"  # Python's exit functions ran
    assert (tmp_path / "rank" / "uploaded").read_text() == "yes"  # its threads were waited for


def test_a_run_that_raises_fails_with_its_traceback(tmp_path: Path) -> None:
    env = stand_in(tmp_path)
    (tmp_path / "site" / "llamafactory" / "train" / "tuner.py").write_text(
        "def run_exp():\n    raise ValueError('Unknown task: sfx.')\n"
    )
    failed = subprocess.run(
        [sys.executable, "-m", "kubetune.launcher.rank", str(tmp_path / "train.yaml")],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert failed.returncode == 1
    assert failed.stderr.rstrip().endswith("ValueError: Unknown task: sfx.")
