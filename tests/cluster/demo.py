"""`make demo`: the local control plane with its GPU nodes, and a sample GPU Job run to completion.

Later the demo grows into the operator running a FineTuneJob and a ModelServe; for now it shows the
ground they stand on.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from tests.cluster import localcluster

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cluster" / "gpu-job.yaml"
NAMESPACE = "kubetune-demo"


def main() -> int:
    console = Console()
    console.rule("[bold]kubetune demo: local control plane")
    with console.status("starting the local control plane (the first run builds it from source)"):
        info = localcluster.up()
    console.print(
        f"API server [bold]{info.server}[/]  versions: "
        + ", ".join(
            f"{k.removesuffix('_VERSION').lower()} {v}"
            for k, v in info.versions.items()
            if k.endswith("_VERSION")
        )
    )

    def kubectl(*args: str, input: str | None = None) -> str:
        return localcluster.kubectl(info, *args, input=input)

    nodes = json.loads(kubectl("get", "nodes", "-o", "json"))["items"]
    table = Table(title="GPU nodes")
    for column in ("node", "ready", "nvidia.com/gpu", "product"):
        table.add_column(column)
    for node in nodes:
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}.get("Ready")
        table.add_row(
            node["metadata"]["name"],
            ready,
            node["status"]["allocatable"].get("nvidia.com/gpu", "0"),
            node["metadata"]["labels"].get("nvidia.com/gpu.product", ""),
        )
    console.print(table)

    kubectl(
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
    )
    job = yaml.safe_load(EXAMPLE.read_text())
    name = job["metadata"]["name"]
    kubectl("delete", "job", name, "-n", NAMESPACE, "--ignore-not-found", "--wait=true")
    localcluster.wait_for(
        "the demo namespace's default ServiceAccount",
        lambda: kubectl("get", "sa", "default", "-n", NAMESPACE, "-o", "name"),
    )
    kubectl("apply", "-n", NAMESPACE, "-f", str(EXAMPLE))
    console.print(f"applied [bold]examples/cluster/{EXAMPLE.name}[/] in namespace {NAMESPACE}")

    started = time.monotonic()
    seen: dict[str, str] = {}
    done: set[str] = set()
    with console.status("waiting for the Job") as status:
        while time.monotonic() - started < 120:
            pods = json.loads(kubectl("get", "pods", "-n", NAMESPACE, "-l", f"job-name={name}", "-o", "json"))
            for pod in pods["items"]:
                key = f"{pod['metadata']['name']} on {pod['spec'].get('nodeName') or '(unscheduled)'}"
                phase = pod["status"].get("phase", "Pending")
                if seen.get(key) != phase:
                    console.print(f"  pod {key}: {phase}")
                    seen[key] = phase
            conditions = json.loads(kubectl("get", "job", name, "-n", NAMESPACE, "-o", "json"))["status"].get(
                "conditions", []
            )
            done = {c["type"] for c in conditions if c["status"] == "True"} & {"Complete", "Failed"}
            status.update(f"waiting for the Job ({time.monotonic() - started:.0f}s)")
            if done:
                break
            time.sleep(0.5)
    result = next(iter(done)) if done else "timed out"
    colour = "green" if result == "Complete" else "red"
    console.rule(f"[bold {colour}]Job {name}: {result}[/] in {time.monotonic() - started:.1f}s")
    console.print(f"export KUBECONFIG={info.kubeconfig}", soft_wrap=True)
    console.print(f"export PATH={info.bin_dir}:$PATH   # kubectl and helm", soft_wrap=True)
    console.print("then: kubectl get nodes,jobs,pods -A    and, to stop it all: make demo-down")
    return 0 if result == "Complete" else 1


if __name__ == "__main__":
    sys.exit(main())
