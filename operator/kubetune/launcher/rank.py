"""One LLaMA-Factory process, under torchrun or alone: `python -m kubetune.launcher.rank CONFIG`.

It runs what `python -m llamafactory.launcher CONFIG` runs (`run_exp`, which reads the config from argv),
then ends the process without the C++ half of the interpreter's exit.

A rank that has trained, saved and left its process group can still die in that last step: one of
torch's C++ objects destroyed at exit holds a thread that was never joined, and the C++ runtime aborts
("terminate called without an active exception", SIGABRT, with no Python frame left on any thread).
Its torchrun then reports the rank failed (its pod fails), the other nodes wait out their exit barrier
(300 s), and the attempt whose work is done and saved is counted a failure and started again. On CPU
nodes with gloo it took about one DeepSpeed run in ten of the worker tier. Once `run_exp` has returned,
all that is left is Python's part of the exit: threads still working are waited for, exit functions run
(an experiment tracker finishing its run, say) and what was written is flushed. That is done here,
then `os._exit` skips the rest.

A run that raises exits as Python exits on an error: its traceback is what the launcher reports.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading


def exit_without_teardown(code: int) -> None:
    """What a normal exit does in Python, in its order, then the process ends: the threads still working
    are waited for (an upload to the hub, a thread pool's workers), the exit functions run, the streams
    are flushed."""
    threading._shutdown()  # the interpreter's own first step at exit
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        # A closed pipe or stream has nothing left to flush.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def main() -> None:
    from llamafactory.train.tuner import run_exp

    run_exp()
    exit_without_teardown(0)


if __name__ == "__main__":
    main()
