"""A soak of the operator: SIGKILLed again and again, and the API server restarted once, while FineTuneJobs
and ModelServes run through restarts and adapter changes. Not a test: it asserts nothing, it reports.

    python -m tests.bench.soak [--jobs 50] [--serves 5] [--kills 50] [--json soak.json]

On its own local control plane (KUBETUNE_CLUSTER_DIR, by default ~/.cache/kubetune/soak-cluster):

- FineTuneJobs of one GPU each; every fifth one's pods exit 137 (OOMKilled), so it restarts and ends
  Failed with `maxRestarts` used up; the others run a few seconds each and end Succeeded. More GPUs are
  asked for than the fake nodes have, so some wait for others to finish.
- ModelServes on CPU whose adapters are changed every couple of seconds by another thread.
- The operator (`kubetune run`) is SIGKILLed at random moments and started again, `--kills` times; half way
  through, kube-apiserver is stopped and started again. Its API connection goes through a proxy the soak
  breaks between kills (`--faults`, tests/faultproxy.py): dead for a few seconds (connections open and
  silent, as when a node or load balancer is lost), reset, or slow. (While kube-apiserver is down, KWOK's
  node leases lapse and the node controller marks every pod NotReady; KWOK, unlike a kubelet, never marks
  them Ready again, so the soak replaces the ModelServe pods left so.)

After the last kill it waits for everything to settle and reports:

duplicates   more Jobs for a FineTuneJob than attempts it made, Jobs owned by no FineTuneJob, more than one
             Deployment, Service or adapters ConfigMap for a ModelServe (must be 0)
orphans      objects the operator manages whose owner is gone or missing (must be 0)
wrong phase  FineTuneJobs whose phase (or restarts) is not what their pods decided, ModelServes not Ready
             or whose adapters ConfigMap is not their spec's (must be 0)
converge     seconds from the last kill until all of that holds
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault(
    "KUBETUNE_CLUSTER_DIR",
    str(Path(os.environ.get("KUBETUNE_CACHE", Path.home() / ".cache" / "kubetune")) / "soak-cluster"),
)

from kubernetes import client, config
from rich.console import Console
from rich.table import Table

from tests.cluster import localcluster
from tests.faultproxy import FaultProxy, proxied_kubeconfig, upstream
from tests.operator_fixtures import OperatorProcess
from tests.specs import finetunejob, modelserve, with_pod_annotations

REPO = Path(__file__).resolve().parents[2]
# Short timeouts, as in the fault tests: a dead connection is noticed within seconds.
FAST = {
    "KUBETUNE_WATCH_SECONDS": "5",
    "KUBETUNE_API_CONNECT_SECONDS": "2",
    "KUBETUNE_API_TIMEOUT_SECONDS": "5",
}
GROUP, VERSION = "kubetune.io", "v1alpha1"
MANAGED = "app.kubernetes.io/managed-by=kubetune"


def restart_apiserver(info: localcluster.ClusterInfo) -> float:
    """Stops kube-apiserver and starts it again with the same arguments; seconds until it answers."""
    pid = info.pids["kube-apiserver"]
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while localcluster.pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    started = time.monotonic()
    info.pids["kube-apiserver"] = localcluster.start_process("kube-apiserver", [a.decode() for a in argv])
    info.save()
    localcluster.wait_for(
        "kube-apiserver to answer again",
        lambda: localcluster.apiserver_ready(info.server, Path(info.state_dir) / "pki"),
        timeout=120,
    )
    return time.monotonic() - started


class Soak:
    def __init__(self, args: argparse.Namespace, info: localcluster.ClusterInfo, workdir: Path):
        self.args, self.info, self.workdir = args, info, workdir
        self.api = config.new_client_from_config(config_file=info.kubeconfig)
        self.core, self.batch = client.CoreV1Api(self.api), client.BatchV1Api(self.api)
        self.apps, self.custom = client.AppsV1Api(self.api), client.CustomObjectsApi(self.api)
        self.namespace = f"soak-{os.urandom(3).hex()}"
        self.expected: dict[str, str] = {}
        self.stop = threading.Event()
        self.errors: list[str] = []

    # --- setting up --------------------------------------------------------------------------------------

    def prepare(self) -> None:
        localcluster.kubectl(
            self.info, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds")
        )
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=self.namespace)))
        localcluster.wait_for(
            "the namespace's default ServiceAccount",
            lambda: (
                self.core.list_namespaced_service_account(
                    self.namespace, field_selector="metadata.name=default"
                ).items
            ),
        )
        claim_root = self.workdir / "claim"
        claim_root.mkdir(parents=True, exist_ok=True)
        volume, claim = localcluster.shared_claim(self.namespace, claim_root)
        self.core.create_persistent_volume(volume)
        self.core.create_namespaced_persistent_volume_claim(self.namespace, claim)

    def create(self) -> None:
        rng = random.Random(7)
        for i in range(self.args.jobs):
            name = f"soak-{i:03d}"
            body = finetunejob(name)
            body["spec"]["maxRestarts"] = 1
            body["spec"]["resources"] = {"nodes": 1, "gpusPerNode": 1}
            if i % 5 == 0:
                oom = {"test.kubetune.io/exit-code": "137", "test.kubetune.io/exit-reason": "OOMKilled"}
                body = with_pod_annotations(body, **oom)
                self.expected[name] = "Failed"
            else:
                duration = f"{rng.randint(3, 20)}s"
                body = with_pod_annotations(body, **{"test.kubetune.io/run-duration": duration})
                self.expected[name] = "Succeeded"
            self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, "finetunejobs", body)
        for i in range(self.args.serves):
            body = modelserve(
                f"serve-{i}", adapters=[{"name": "a", "path": "adapters/a"}], resources={"gpus": 0}
            )
            self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, "modelserves", body)

    def change_adapters(self) -> None:
        """Another thread: adapters added, moved and removed, every couple of seconds, until told to stop."""
        rng = random.Random(11)
        while not self.stop.wait(rng.uniform(1, 3)):
            name = f"serve-{rng.randrange(self.args.serves)}"
            adapters = [
                {"name": n, "path": f"adapters/{n}-v{rng.randint(1, 3)}"}
                for n in "abcd"
                if rng.random() < 0.6
            ]
            try:
                self.custom.patch_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, "modelserves", name, {"spec": {"adapters": adapters}}
                )
            except Exception as error:  # the API server is down for a moment: the next change comes
                self.errors.append(f"adapter change: {type(error).__name__}")

    # --- what the cluster holds ---------------------------------------------------------------------------

    def verdicts(self) -> dict[str, Any]:
        ns = self.namespace
        ftjs = {f["metadata"]["name"]: f for f in self.custom.list_namespaced_custom_object(
            GROUP, VERSION, ns, "finetunejobs")["items"]}  # fmt: skip
        serves = {s["metadata"]["name"]: s for s in self.custom.list_namespaced_custom_object(
            GROUP, VERSION, ns, "modelserves")["items"]}  # fmt: skip
        uids = {f["metadata"]["uid"] for f in ftjs.values()} | {s["metadata"]["uid"] for s in serves.values()}
        jobs = self.batch.list_namespaced_job(ns).items
        duplicates, orphans, wrong = [], [], []

        jobs_of: dict[str, list[str]] = {}
        for job in jobs:
            owners = [o.uid for o in job.metadata.owner_references or [] if o.controller]
            if not owners or owners[0] not in uids:
                orphans.append(f"Job {job.metadata.name}")
                continue
            jobs_of.setdefault(owners[0], []).append(job.metadata.name)
        for name, ftj in ftjs.items():
            status = ftj.get("status") or {}
            attempts = status.get("attempt") or 1
            mine = jobs_of.get(ftj["metadata"]["uid"], [])
            if len(mine) > attempts or len(set(mine)) != len(mine):
                duplicates.append(f"{name}: {len(mine)} Jobs for {attempts} attempt(s): {sorted(mine)}")
            phase = status.get("phase")
            if phase != self.expected[name]:
                wrong.append(f"{name}: {phase} ({status.get('reason')}), expected {self.expected[name]}")
            elif phase == "Failed" and status.get("restarts") != 1:
                wrong.append(f"{name}: Failed after {status.get('restarts')} restart(s), expected 1")

        for kind, items in (
            ("ConfigMap", self.core.list_namespaced_config_map(ns, label_selector=MANAGED).items),
            ("Service", self.core.list_namespaced_service(ns, label_selector=MANAGED).items),
            ("Deployment", self.apps.list_namespaced_deployment(ns, label_selector=MANAGED).items),
            ("ServiceAccount", self.core.list_namespaced_service_account(ns, label_selector=MANAGED).items),
        ):
            per_owner: dict[tuple[str, str], int] = {}
            for item in items:
                owners = [o.uid for o in item.metadata.owner_references or [] if o.controller]
                if not owners or owners[0] not in uids:
                    orphans.append(f"{kind} {item.metadata.name}")
                    continue
                role = item.metadata.name.rsplit("-", 1)[-1]
                per_owner[(owners[0], role)] = per_owner.get((owners[0], role), 0) + 1
            duplicates += [
                f"{kind} x{n} for one owner ({role})" for (_, role), n in per_owner.items() if n > 1
            ]

        for name, serve in serves.items():
            status = serve.get("status") or {}
            if (
                status.get("phase") != "Ready"
                or status.get("observedGeneration") != serve["metadata"]["generation"]
            ):
                wrong.append(
                    f"{name}: {status.get('phase')} at generation {status.get('observedGeneration')}"
                )
                continue
            try:
                data = self.core.read_namespaced_config_map(f"{name}-adapters", ns).data or {}
            except client.ApiException:
                wrong.append(f"{name}: no adapters ConfigMap")
                continue
            desired = {a["name"]: f"/mnt/claim/{a['path']}" for a in serve["spec"].get("adapters") or []}
            if json.loads(data.get("adapters.json", "{}")) != desired:
                wrong.append(f"{name}: the adapters ConfigMap is not the spec's")
        return {"duplicates": duplicates, "orphans": orphans, "wrong": wrong}

    def kubelet_readiness(self) -> int:
        """What a kubelet would do that KWOK does not: while kube-apiserver was down the node leases lapsed
        and the node controller marked every pod NotReady; a kubelet's next readiness probe marks them Ready
        again, KWOK never does. Such ModelServe pods are deleted (their Deployment makes new, Ready ones)."""
        stale = 0
        for pod in self.core.list_namespaced_pod(
            self.namespace, label_selector="kubetune.io/modelserve"
        ).items:
            conditions = {c.type: c.status for c in pod.status.conditions or []}
            if pod.status.phase == "Running" and conditions.get("Ready") == "False":
                self.core.delete_namespaced_pod(pod.metadata.name, self.namespace)
                stale += 1
        return stale

    # --- the soak ------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        proxy = FaultProxy(*upstream(self.info.kubeconfig))
        kubeconfig = proxied_kubeconfig(self.info.kubeconfig, proxy, self.workdir / "proxied.kubeconfig")
        operator = OperatorProcess(self.info, self.workdir / "operator.log", kubeconfig, env=FAST)
        operator.start()
        faults: dict[str, int] = {"dead": 0, "reset": 0, "slow": 0}
        self.create()
        changer = threading.Thread(target=self.change_adapters, name="adapters", daemon=True)
        changer.start()
        rng = random.Random(3)
        apiserver_seconds = None
        started = time.monotonic()
        for kill in range(1, self.args.kills + 1):
            time.sleep(rng.uniform(0.2, 3.0))
            if self.args.faults:
                fault = rng.choice(sorted(faults))
                faults[fault] += 1
                if fault == "reset":
                    proxy.reset()
                else:
                    proxy.dead() if fault == "dead" else proxy.slow(0.2)
                    time.sleep(rng.uniform(1.0, 15.0 if fault == "dead" else 5.0))
                    proxy.restore()
                time.sleep(rng.uniform(0.2, 3.0))
            operator.kill()
            if kill == self.args.kills // 2:
                apiserver_seconds = restart_apiserver(self.info)
            operator.start()
        last_kill = time.monotonic()
        self.stop.set()
        changer.join()
        converged, verdict = None, {}
        while time.monotonic() - last_kill < self.args.settle_timeout:
            try:
                self.kubelet_readiness()
                verdict = self.verdicts()
            except Exception as error:
                self.errors.append(f"verdict: {type(error).__name__}")
                time.sleep(2)
                continue
            if not any(verdict.values()):
                converged = time.monotonic() - last_kill
                break
            time.sleep(2)
        operator.stop()
        proxy.close()
        return {
            "jobs": self.args.jobs,
            "serves": self.args.serves,
            "kills": self.args.kills,
            "kill_phase_seconds": round(last_kill - started, 1),
            "apiserver_restart_seconds": round(apiserver_seconds or 0, 1),
            "connection_faults": faults,
            "converge_seconds_after_last_kill": None if converged is None else round(converged, 1),
            "duplicates": len(verdict.get("duplicates", [])),
            "orphans": len(verdict.get("orphans", [])),
            "wrong_phase": len(verdict.get("wrong", [])),
            "details": verdict,
            "transient_errors": len(self.errors),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--serves", type=int, default=5)
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--settle-timeout", type=float, default=600)
    parser.add_argument(
        "--faults", action=argparse.BooleanOptionalAction, default=True, help="break the API connection too"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep-cluster", action="store_true")
    args = parser.parse_args(argv)
    console = Console()
    started_cluster = localcluster.running() is None
    info = localcluster.up()
    os.environ["KUBECONFIG"] = info.kubeconfig
    try:
        with tempfile.TemporaryDirectory(prefix="kubetune-soak-") as tmp:
            soak = Soak(args, info, Path(tmp))
            soak.prepare()
            result = soak.run()
    finally:
        if started_cluster and not args.keep_cluster:
            localcluster.down()
    table = Table(title="kubetune soak", show_header=False)
    for key, value in result.items():
        if key != "details":
            table.add_row(key, str(value))
    console.print(table)
    for key, items in result["details"].items():
        for item in items[:20]:
            console.print(f"  {key}: {item}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
