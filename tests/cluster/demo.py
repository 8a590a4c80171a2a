"""`make demo`: the local control plane, the operator, and an example FineTuneJob run to Succeeded.

Pods never really run here (KWOK plays the kubelet of the fake GPU nodes), so the demo shows what the
operator does: validate, create the children, follow the pods, report status and Events.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from tests.cluster import localcluster

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "finetune" / "qwen2.5-7b-ner-lora.yaml"
NAMESPACE = "kubetune-demo"


def main() -> int:
    console = Console()
    console.rule("[bold]kubetune demo")
    with console.status("starting the local control plane (the first run builds it from source)"):
        info = localcluster.up()
    versions = ", ".join(
        f"{k.removesuffix('_VERSION').lower()} {v}"
        for k, v in info.versions.items()
        if k.endswith("_VERSION")
    )
    console.print(f"API server [bold]{info.server}[/] ({versions})")

    def kubectl(*args: str, input: str | None = None) -> str:
        return localcluster.kubectl(info, *args, input=input)

    show_nodes(console, json.loads(kubectl("get", "nodes", "-o", "json"))["items"])
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    localcluster.wait_for(
        "the kubetune.io API", lambda: "finetunejobs" in kubectl("api-resources", "--api-group=kubetune.io")
    )
    console.print("installed the CRDs from [bold]crds/[/]")

    prepare_namespace(info, kubectl)
    operator, log_path = start_operator(info)
    try:
        return run_example(console, kubectl, log_path)
    finally:
        operator.terminate()
        operator.wait(timeout=20)
        console.print(f"operator stopped (its log: {log_path})")
        console.print(f"export KUBECONFIG={info.kubeconfig}", soft_wrap=True)
        console.print(f"export PATH={info.bin_dir}:$PATH   # kubectl and helm", soft_wrap=True)
        console.print("then: kubectl get ftj,jobs,pods -n kubetune-demo;  stop it all: make demo-down")


def show_nodes(console: Console, nodes: list[dict]) -> None:
    table = Table(title="GPU nodes")
    for column in ("node", "ready", "nvidia.com/gpu", "product"):
        table.add_column(column)
    for node in nodes:
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}.get("Ready", "?")
        table.add_row(
            node["metadata"]["name"],
            ready,
            node["status"]["allocatable"].get("nvidia.com/gpu", "0"),
            node["metadata"]["labels"].get("nvidia.com/gpu.product", ""),
        )
    console.print(table)


def prepare_namespace(info: localcluster.ClusterInfo, kubectl) -> None:
    """The demo namespace and its shared claim (a PersistentVolume on a directory of this machine)."""
    claim_dir = Path(info.state_dir) / "claims" / NAMESPACE
    claim_dir.mkdir(parents=True, exist_ok=True)
    manifests = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": f"{NAMESPACE}-shared"},
            "spec": {
                "capacity": {"storage": "500Gi"},
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "manual",
                "hostPath": {"path": str(claim_dir)},
                "claimRef": {"namespace": NAMESPACE, "name": "shared"},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "shared", "namespace": NAMESPACE},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "manual",
                "resources": {"requests": {"storage": "500Gi"}},
            },
        },
    ]
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}))
    localcluster.wait_for(
        "the demo namespace's default ServiceAccount",
        lambda: kubectl("get", "sa", "default", "-n", NAMESPACE, "-o", "name"),
    )


def start_operator(info: localcluster.ClusterInfo) -> tuple[subprocess.Popen, Path]:
    log_path = Path(info.state_dir) / "logs" / "kubetune-operator.log"
    liveness = localcluster.free_port()
    env = {**os.environ, "KUBECONFIG": info.kubeconfig, "KUBETUNE_RESYNC_SECONDS": "10"}
    with open(log_path, "ab") as log:
        operator = subprocess.Popen(
            [
                sys.executable, "-m", "kubetune.cli", "run",
                "--liveness", f"http://127.0.0.1:{liveness}/healthz",
                "--metrics-port", str(localcluster.free_port()),
            ],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip

    def alive() -> bool:
        if operator.poll() is not None:
            raise RuntimeError(f"the operator exited; see {log_path}")
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{liveness}/healthz", timeout=2) as response:
            return response.status == 200

    localcluster.wait_for("the operator", alive, timeout=60, logs=log_path)
    return operator, log_path


def run_example(console: Console, kubectl, log_path: Path) -> int:
    body = yaml.safe_load(EXAMPLE.read_text())
    name = body["metadata"]["name"]
    body["metadata"]["namespace"] = NAMESPACE
    # On fake nodes a pod "trains" for as long as this annotation says.
    body["spec"]["podMetadata"] = {"annotations": {"test.kubetune.io/run-duration": "6s"}}
    kubectl("delete", "finetunejob", name, "-n", NAMESPACE, "--ignore-not-found", "--wait=true")
    kubectl("apply", "-f", "-", input=json.dumps(body))
    console.print(f"applied [bold]examples/finetune/{EXAMPLE.name}[/] as {NAMESPACE}/{name}")

    started = time.monotonic()
    seen: set[str] = set()
    phase = None
    with console.status("waiting for the FineTuneJob") as spinner:
        while time.monotonic() - started < 120:
            ftj = json.loads(kubectl("get", "finetunejob", name, "-n", NAMESPACE, "-o", "json"))
            status = ftj.get("status") or {}
            line = f"{status.get('phase')}: {status.get('reason')}: {status.get('message')}"
            if status.get("phase") and line not in seen:
                seen.add(line)
                console.print(f"  [{time.monotonic() - started:5.1f}s] {line}")
            phase = status.get("phase")
            spinner.update(
                f"waiting for the FineTuneJob ({phase or 'new'}, {time.monotonic() - started:.0f}s)"
            )
            if phase in ("Succeeded", "Failed"):
                break
            time.sleep(0.5)

    console.print(kubectl("get", "finetunejob,jobs,pods", "-n", NAMESPACE), soft_wrap=True)
    events = kubectl("get", "events", "-n", NAMESPACE, "--field-selector", f"involvedObject.name={name}")
    console.print(events, soft_wrap=True)
    ok = phase == "Succeeded"
    output = (
        json.loads(kubectl("get", "finetunejob", name, "-n", NAMESPACE, "-o", "json")).get("status") or {}
    ).get("output", {})
    colour = "green" if ok else "red"
    console.rule(
        f"[bold {colour}]FineTuneJob {name}: {phase or 'no status'}[/] in {time.monotonic() - started:.1f}s"
    )
    if ok:
        console.print(
            f"adapter on claim [bold]{output.get('claim')}[/] at [bold]{output.get('adapterPath')}[/]"
        )
    else:
        console.print(f"see the operator's log: {log_path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
