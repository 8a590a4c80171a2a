"""`kubetune launch`: the trainer pod's entrypoint.

1. read the rendered LLaMA-Factory YAML and the pod's environment; decide how to resume;
2. run torchrun over LLaMA-Factory (one process on a machine without GPUs) in its own process group,
   forwarding SIGTERM so the trainer can write a checkpoint before the pod goes;
3. on node rank 0: follow trainer_log.jsonl into the FineTuneJob's status and Prometheus metrics;
4. after a successful run, on node rank 0: the post-training steps the spec asked for (merge, predict);
5. exit with the child's code, leaving a one-line reason in /dev/termination-log when it failed.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from kubetune.api.defaults import LAUNCHER_CONFIG_FILE, LLAMAFACTORY_CONFIG_FILE
from kubetune.launcher import compiled_ops, plan, publish
from kubetune.launcher.fetch import write_termination_message
from kubetune.launcher.progress import TRAINER_LOG, Reporter
from kubetune.launcher.reasons import termination_reason

log = logging.getLogger("kubetune.launch")
LOG_TAIL_LINES = 200


class StatusClient:
    """Patches the FineTuneJob's status with the pod's own (narrowly scoped) ServiceAccount token."""

    def __init__(self, namespace: str, name: str):
        from kubetune.kube import Kube

        self.kube = Kube.from_environment(os.environ.get("KUBECONFIG"))
        self.namespace, self.name = namespace, name

    def patch(self, status: dict[str, Any]) -> None:
        self.kube.patch_status("FineTuneJob", self.namespace, self.name, status)


def run_streaming(argv: list[str], env: dict[str, str], tail: collections.deque[str]) -> int:
    """Runs a child in its own process group, echoing its output and keeping the tail; forwards signals."""
    log.info("running: %s", " ".join(argv))
    child = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
        bufsize=1,
    )

    def forward(signum: int, _frame: object) -> None:
        log.warning("received %s: passing it to the training processes", signal.Signals(signum).name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        assert child.stdout is not None
        for line in child.stdout:
            sys.stdout.write(line)
            tail.append(line)
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code  # killed by signal N -> 128 + N, as a shell reports it


def write_config(config: dict[str, Any], name: str) -> Path:
    # One directory per launcher process: two launchers on one machine (tests, a shared node) never mix.
    directory = Path(tempfile.gettempdir()) / f"kubetune-{os.getpid()}"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def read_metrics(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, int | float)}


def fail(env: plan.PodEnvironment, code: int, reason: str) -> int:
    log.error("%s", reason)
    write_termination_message(reason, str(env.termination_log))
    return code


def record_owner(env: plan.PodEnvironment) -> None:
    """Whose training this output path holds: a FineTuneJob re-created under the same name is told."""
    try:
        env.output_dir.mkdir(parents=True, exist_ok=True)
        owner = {"uid": env.finetunejob_uid, "name": env.finetunejob, "namespace": env.namespace}
        (env.output_dir / plan.OWNER_FILE).write_text(json.dumps(owner) + "\n")
    except OSError as error:  # a read-only or full claim fails the training itself, with its own words
        log.warning("could not record the owner of %s: %s", env.output_dir, error)


def launch(env: plan.PodEnvironment) -> int:
    train = yaml.safe_load((env.config_dir / LLAMAFACTORY_CONFIG_FILE).read_text())
    launcher_file = env.config_dir / LAUNCHER_CONFIG_FILE
    post = json.loads(launcher_file.read_text()) if launcher_file.exists() else {}

    decision = plan.decide_resume(env.output_dir, env.attempt, env.finetunejob_uid, env.continue_finished)
    if decision.error:
        return fail(env, 2, decision.error)
    log.info("%s", decision.note)
    if env.is_leader and env.finetunejob_uid:
        record_owner(env)
    config_path = write_config(plan.training_config(train, decision), "train.yaml")
    ops_key = compiled_ops.current_key() if env.torch_extensions is not None else None
    child_env = plan.child_environment(env, os.environ, ops_key)
    in_use = None
    if ops_key:
        log.info("compiled DeepSpeed ops are kept in %s", child_env["TORCH_EXTENSIONS_DIR"])
        in_use = compiled_ops.use(Path(child_env["TORCH_EXTENSIONS_DIR"]))

    status = None
    if env.is_leader and env.finetunejob and env.namespace:
        try:
            status = StatusClient(env.namespace, env.finetunejob)
            log.info("reporting progress to FineTuneJob %s/%s", env.namespace, env.finetunejob)
        except Exception as error:  # no API access: train anyway
            log.warning("progress will not be reported: %s", error)
    elif not env.is_leader:
        log.info("node rank %d: node rank 0 reports the progress", env.node_rank)
    metrics = None
    if env.is_leader:
        from kubetune.launcher.metrics import TrainingMetrics

        metrics = TrainingMetrics.serve(env.metrics_port)
    reporter = None
    if status is not None or metrics is not None:
        reporter = Reporter(
            env.output_dir / TRAINER_LOG,
            send=(lambda progress: status.patch({"progress": progress})) if status else (lambda _p: None),
            interval=env.progress_interval,
            on_record=metrics.observe if metrics else None,
        ).start()

    tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
    command = plan.training_command(env, config_path, deepspeed=bool(train.get("deepspeed")))
    code = run_streaming(command, child_env, tail)
    if in_use is not None:
        in_use.close()
    if reporter is not None:
        reporter.stop()
    if code != 0:
        return fail(env, code, termination_reason(tail, code))

    results: dict[str, Any] = {}
    if env.is_leader:
        publish.readable_by_all(env.output_dir)  # for the ModelServes' pods, which run as vLLM's user
        results["train"] = read_metrics(env.output_dir / "train_results.json")
        code = post_training(env, train, post, child_env, results)
        if status is not None and any(results.values()):
            try:
                status.patch({"metrics": {k: v for k, v in results.items() if v}})
            except Exception as error:
                log.warning("could not report the final metrics: %s", error)
    return code


def post_training(
    env: plan.PodEnvironment,
    train: dict[str, Any],
    post: dict[str, Any],
    child_env: dict[str, str],
    results: dict[str, Any],
) -> int:
    """Merge and predict, as the spec asked; each is its own LLaMA-Factory run, in one process."""
    python = sys.executable
    if post.get("merge"):
        config = plan.export_config(train, env.output_dir, post["merge"])
        path = write_config(config, "export.yaml")
        tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        code = run_streaming([python, "-m", "llamafactory.cli", "export", str(path)], child_env, tail)
        if code != 0:
            return fail(env, code, "merge failed: " + termination_reason(tail, code))
        publish.readable_by_all(Path(config["export_dir"]))
        log.info("merged model written to %s", config["export_dir"])
    if post.get("predict"):
        config = plan.predict_config(train, env.output_dir, post["predict"])
        path = write_config(config, "predict.yaml")
        tail = collections.deque(maxlen=LOG_TAIL_LINES)
        code = run_streaming([python, "-m", plan.RANK_MODULE, str(path)], child_env, tail)
        if code != 0:
            return fail(env, code, "predict failed: " + termination_reason(tail, code))
        results["predict"] = read_metrics(Path(config["output_dir"]) / "predict_results.json")
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="kubetune launch", description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[kubetune] %(asctime)s %(message)s")
    try:
        env = plan.PodEnvironment.from_env()
    except KeyError as missing:
        print(f"kubetune launch: {missing} is not set; this runs inside a FineTuneJob's pod", file=sys.stderr)
        return 2
    return launch(env)
