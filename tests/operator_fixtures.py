"""The operator under test: the real `kubetune run` process against the local control plane.

A pytest plugin (tests/conftest.py loads it), so that the integration and serve tiers share one operator
process in a session: two would both reconcile every resource.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.cluster import localcluster
from tests.kube import wait_until

REPO = Path(__file__).resolve().parents[1]


class OperatorProcess:
    """`kubetune run` in a subprocess, so a test can kill it and start it again like a crashed pod."""

    def __init__(
        self,
        cluster: localcluster.ClusterInfo,
        log_path: Path,
        kubeconfig: str | None = None,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
    ):
        self.cluster = cluster
        self.kubeconfig = kubeconfig or cluster.kubeconfig
        self.log_path = log_path
        self.env = env or {}
        self.args = args
        self.process: subprocess.Popen | None = None
        self.liveness_port = localcluster.free_port()
        self.metrics_port = localcluster.free_port()

    def start(self) -> None:
        env = {**os.environ, "KUBECONFIG": self.kubeconfig, "KUBETUNE_RESYNC_SECONDS": "5", **self.env}
        log = open(self.log_path, "ab")  # noqa: SIM115 - the process owns it until it exits
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "kubetune.cli", "run",
                "--liveness", f"http://127.0.0.1:{self.liveness_port}/healthz",
                "--metrics-port", str(self.metrics_port),
                *self.args,
            ],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip
        wait_until(self.alive, "the operator's liveness endpoint", timeout=60)

    def alive(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise AssertionError(f"the operator exited; its log:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL, as when a node dies: no cleanup, no goodbye."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="session")
def operator(
    crds: None, cluster: localcluster.ClusterInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    workdir = tmp_path_factory.mktemp("operator")
    kubeconfig = None
    if os.environ.get("KUBETUNE_OPERATOR_AS") == "chart":
        # The operator runs with exactly the RBAC the Helm chart grants: a missing verb fails the scenarios.
        from tests.chart.install import install_chart, service_account_kubeconfig

        install_chart(cluster)
        kubeconfig = str(service_account_kubeconfig(cluster, workdir / "operator.kubeconfig"))
    process = OperatorProcess(cluster, workdir / "operator.log", kubeconfig)
    process.start()
    yield process
    process.stop()


@pytest.fixture
def claim(namespace: str, core: client.CoreV1Api, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A bound ReadWriteMany claim named `shared`, backed by a directory of this machine."""
    root = tmp_path / "claim"
    root.mkdir()
    volume, claim_manifest = localcluster.shared_claim(namespace, root)
    core.create_persistent_volume(volume)
    core.create_namespaced_persistent_volume_claim(namespace, claim_manifest)
    wait_until(
        lambda: core.read_namespaced_persistent_volume_claim("shared", namespace).status.phase == "Bound",
        "the claim to bind",
        timeout=30,
    )
    yield "shared", root
    core.delete_persistent_volume(volume["metadata"]["name"])


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> None:
    """On failure, the operator's log tail is printed with the test's report."""
    if call.when == "call" and call.excinfo is not None and "operator" in getattr(item, "funcargs", {}):
        item.add_report_section("call", "operator log", item.funcargs["operator"].log_tail())
