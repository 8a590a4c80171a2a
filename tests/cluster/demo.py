"""`make demo`: from a FineTuneJob to an adapter served by a ModelServe, on the local control plane.

1. the local control plane (built the first time) and its fake GPU nodes;
2. the Helm chart's CRDs and RBAC, and the operator running as the chart's ServiceAccount;
3. SmolLM2-135M-Instruct (prepared once into the cache by `make real-model`) and the entity-extraction
   dataset (examples/demo/data) put on the demo namespace's claim;
4. examples/demo/finetunejob.yaml: its pod lands on a fake GPU node (KWOK), and the trainer runs here on the
   CPU exactly as that pod would run it (`kubetune launch`, real LLaMA-Factory), a LoRA teaching the model
   to answer with a sentence's entities as JSON, reporting real progress into the FineTuneJob's status,
   shown as a progress bar, then its loss curves;
5. examples/demo/modelserve.yaml: vLLM's Deployment for the base model and the adapter just trained; its
   pod lands on a fake node, and this machine runs that pod's containers as the kubelet would (the real
   vLLM, its CPU build, and the adapter-sync sidecar: tests/serve/pod.py), until the ModelServe is Ready
   with the adapter served; then, for three held-out sentences, the base model's answer beside the
   adapter's, also written to demo-answers.json in the cluster's state folder.
`make demo-down` stops it all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tests.chart.install import install_chart, service_account_kubeconfig
from tests.cluster import localcluster
from tests.cluster.localcluster import token_kubeconfig
from tests.serve import entities
from tests.serve.pod import ServePod

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "examples" / "demo"
NAMESPACE = "kubetune-demo"
TRAINER_PYTHON = os.environ.get(
    "KUBETUNE_TRAINER_PYTHON", str(Path.home() / ".cache" / "kubetune" / "trainer-venv" / "bin" / "python")
)
GROUP, VERSION = "kubetune.io", "v1alpha1"
DATASETS = ("entities-train.json", "entities-heldout.json")
SHOWN = 3  # held-out sentences answered by the base model and by the adapter


class Timings:
    """How long each part of the demo took, printed at the end."""

    def __init__(self) -> None:
        self.parts: list[tuple[str, float]] = []
        self.started = time.monotonic()

    def add(self, part: str, since: float) -> float:
        now = time.monotonic()
        self.parts.append((part, now - since))
        return now

    def table(self) -> Table:
        table = Table(title="where the time went")
        table.add_column("part")
        table.add_column("seconds", justify="right")
        for part, seconds in self.parts:
            table.add_row(part, f"{seconds:.0f}")
        table.add_row("[bold]total", f"[bold]{time.monotonic() - self.started:.0f}")
        return table


def main() -> int:
    console = Console()
    console.rule("[bold]kubetune demo")
    timings = Timings()
    mark = time.monotonic()
    with console.status("starting the local control plane (the first run builds it from source)"):
        info = localcluster.up()
    mark = timings.add("control plane", mark)
    console.print(f"API server [bold]{info.server}[/] (Kubernetes {info.versions['KUBERNETES_VERSION']})")

    def kubectl(*args: str, input: str | None = None) -> str:
        return localcluster.kubectl(info, *args, input=input)

    show_nodes(console, json.loads(kubectl("get", "nodes", "-o", "json"))["items"])
    with console.status("installing the Helm chart (CRDs, RBAC)"):
        kubectl(
            "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "charts" / "kubetune" / "crds")
        )
        install_chart(info)
    console.print("installed [bold]charts/kubetune[/] into kubetune-system")

    claim = prepare_namespace(info, kubectl)
    mark = timings.add("chart and namespace", mark)
    with console.status("SmolLM2-135M-Instruct onto the claim (prepared once from its pinned PyPI wheel)"):
        model = place_real_model(claim)
    console.print(f"SmolLM2-135M-Instruct on the claim at {model.relative_to(claim)}")
    mark = timings.add("the model onto the claim", mark)
    operator, operator_log = start_operator(info)
    console.print(f"operator running as the chart's ServiceAccount (log: {operator_log})")
    timings.add("operator start", mark)
    try:
        return run(console, info, kubectl, claim, timings)
    finally:
        operator.terminate()
        operator.wait(timeout=20)
        console.print(timings.table())
        console.print(f"export KUBECONFIG={info.kubeconfig}", soft_wrap=True)
        console.print(f"export PATH={info.bin_dir}:$PATH   # kubectl and helm", soft_wrap=True)
        console.print("then: kubectl get ftj,mserve -n kubetune-demo;  stop it all: make demo-down")


def show_nodes(console: Console, nodes: list[dict[str, Any]]) -> None:
    table = Table(title="GPU nodes (KWOK)")
    for column in ("node", "ready", "nvidia.com/gpu", "product"):
        table.add_column(column)
    for node in nodes:
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}.get("Ready", "?")
        labels = node["metadata"]["labels"]
        gpus = node["status"]["allocatable"].get("nvidia.com/gpu", "0")
        table.add_row(node["metadata"]["name"], ready, gpus, labels.get("nvidia.com/gpu.product", ""))
    console.print(table)


def prepare_namespace(info: localcluster.ClusterInfo, kubectl) -> Path:
    """The demo namespace and its shared claim: a PersistentVolume on a directory of this machine."""
    claim = Path(info.state_dir) / "claims" / NAMESPACE
    # Each demo trains from scratch: an earlier demo's finished run would be refused as another job's.
    shutil.rmtree(claim / "runs", ignore_errors=True)
    (claim / "datasets").mkdir(parents=True, exist_ok=True)
    for name in DATASETS:
        shutil.copyfile(DEMO / "data" / name, claim / "datasets" / name)
    # A volume left Released by an earlier demo's deleted namespace would never bind again.
    phase = kubectl(
        "get", "pv", f"{NAMESPACE}-shared", "--ignore-not-found", "-o", "jsonpath={.status.phase}"
    )
    if phase == "Released":
        kubectl("delete", "pv", f"{NAMESPACE}-shared", "--wait=true")
    manifests = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        *localcluster.shared_claim(NAMESPACE, claim, size="500Gi"),
    ]
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}))
    localcluster.wait_for(
        "the demo namespace's default ServiceAccount",
        lambda: kubectl("get", "sa", "default", "-n", NAMESPACE, "-o", "name"),
    )
    return claim


def place_real_model(claim: Path) -> Path:
    """The prepared model (scripts/real_model.py: a no-op once done) onto the claim, hard-linked if it can."""
    cache = entities.real_model_dir()
    subprocess.run([TRAINER_PYTHON, "scripts/real_model.py", str(cache)], cwd=REPO, check=True)
    return entities.place_model(claim)


def start_operator(info: localcluster.ClusterInfo) -> tuple[subprocess.Popen, Path]:
    logs = Path(info.state_dir) / "logs"
    kubeconfig = service_account_kubeconfig(info, Path(info.state_dir) / "operator.kubeconfig")
    liveness = localcluster.free_port()
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "KUBETUNE_RESYNC_SECONDS": "10"}
    log_path = logs / "kubetune-operator.log"
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


def get(kubectl, kind: str, name: str) -> dict[str, Any]:
    return json.loads(kubectl("get", kind, name, "-n", NAMESPACE, "-o", "json"))


def run(console: Console, info: localcluster.ClusterInfo, kubectl, claim: Path, timings: Timings) -> int:
    from tests.worker.pod import materialise

    ftj = yaml.safe_load((DEMO / "finetunejob.yaml").read_text())
    name = ftj["metadata"]["name"]
    mserve = yaml.safe_load((DEMO / "modelserve.yaml").read_text())
    for kind in ("modelserve", "finetunejob"):
        kubectl("delete", kind, "--all", "-n", NAMESPACE, "--ignore-not-found", "--wait=true")
    shutil.rmtree(claim / "runs", ignore_errors=True)
    # KWOK keeps the pod Running until the trainer here has finished.
    held = json.loads(json.dumps(ftj))
    held["spec"]["podMetadata"] = {"annotations": {"test.kubetune.io/hold": "true"}}
    kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(held))
    console.print(f"applied [bold]examples/demo/finetunejob.yaml[/] ({NAMESPACE}/{name})")
    localcluster.wait_for(
        "the FineTuneJob to run",
        lambda: (get(kubectl, "ftj", name).get("status") or {}).get("phase") == "Running",
    )
    pod = json.loads(
        kubectl("get", "pods", "-n", NAMESPACE, "-l", f"kubetune.io/finetunejob={name}", "-o", "json")
    )
    console.print(
        f"  pod {pod['items'][0]['metadata']['name']} is Running on {pod['items'][0]['spec']['nodeName']}"
    )

    # The trainer, as the pod runs it, with the pod's own narrowly scoped token.
    body = get(kubectl, "ftj", name)
    launcher_kubeconfig = localcluster.token_kubeconfig(
        info, NAMESPACE, f"{name}-launcher", Path(info.state_dir) / "launcher.kubeconfig", duration="1h"
    )
    workdir = Path(info.state_dir) / "demo-pod"
    shutil.rmtree(workdir, ignore_errors=True)
    trainer = materialise(
        body, namespace=NAMESPACE, uid=body["metadata"]["uid"], claim=claim, workdir=workdir,
        kubeconfig=launcher_kubeconfig, progress_interval=1.0,
    )  # fmt: skip
    trainer.env["KUBETUNE_GPUS_PER_NODE"] = "0"  # this machine has no GPU: one process on the CPU
    trainer.python = TRAINER_PYTHON
    process = trainer.start(workdir / "trainer.log")
    started = time.monotonic()
    with Progress(
        TextColumn("[bold]training[/]"), BarColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
        console=console,
    ) as bars:  # fmt: skip
        task = bars.add_task("starting LLaMA-Factory", total=None)
        while process.poll() is None:
            progress = (get(kubectl, "ftj", name).get("status") or {}).get("progress") or {}
            if progress.get("totalSteps"):
                step, total = progress.get("step", 0), progress["totalSteps"]
                shown = f"step {step}/{total}  loss {progress.get('loss', 0):.4f}"
                bars.update(task, total=total, completed=step, description=shown)
            time.sleep(0.5)
        progress = (get(kubectl, "ftj", name).get("status") or {}).get("progress") or {}
        bars.update(task, total=progress.get("totalSteps", 1), completed=progress.get("step", 1))
    if process.returncode != 0:
        console.print(
            f"[red]the trainer failed[/]: {trainer.termination_message()} (log: {workdir / 'trainer.log'})"
        )
        return 1
    console.print(f"  trained in {time.monotonic() - started:.0f}s; adapter in {trainer.output_dir}")
    mark = timings.add("training (LLaMA-Factory on the CPU)", started)
    for item in json.loads(kubectl("get", "pods", "-n", NAMESPACE, "-l", f"kubetune.io/finetunejob={name}",
                                   "-o", "json"))["items"]:  # fmt: skip
        kubectl("annotate", "pod", item["metadata"]["name"], "-n", NAMESPACE, "test.kubetune.io/hold-")
    localcluster.wait_for(
        "the FineTuneJob to succeed",
        lambda: (get(kubectl, "ftj", name).get("status") or {}).get("phase") == "Succeeded",
        timeout=60,
    )
    show_curves(console, get(kubectl, "ftj", name), Path(info.state_dir) / "curves.png")

    kubectl("apply", "-n", NAMESPACE, "-f", str(DEMO / "modelserve.yaml"))
    console.print("applied [bold]examples/demo/modelserve.yaml[/]")
    mark = timings.add("the job to Succeeded, curves", mark)
    pod = serve(console, info, kubectl, claim, mserve)
    mark = timings.add("vLLM start, the adapter served", mark)
    try:
        code = summary(console, kubectl, name, mserve["metadata"]["name"])
        answers = compare(console, pod, mserve)
        path = Path(info.state_dir) / "demo-answers.json"
        path.write_text(json.dumps(answers, indent=1, ensure_ascii=False) + "\n")
        console.print(f"  the answers: {path}", soft_wrap=True)
        timings.add("the answers", mark)
        return code
    finally:
        pod.stop()


def serve(
    console: Console, info: localcluster.ClusterInfo, kubectl, claim: Path, mserve: dict[str, Any]
) -> ServePod:
    """Runs the ModelServe pod's containers here, as its kubelet would, until the adapter is served."""
    name = mserve["metadata"]["name"]
    adapter = mserve["spec"]["adapters"][0]["name"]
    pods = localcluster.wait_for(
        "KWOK to run the ModelServe's pod",
        lambda: [
            p
            for p in json.loads(kubectl("get", "pods", "-n", NAMESPACE, "-l",
                                        f"kubetune.io/modelserve={name}", "-o", "json"))["items"]
            if p["status"].get("phase") == "Running"
        ],
        timeout=60,
    )  # fmt: skip
    workdir = Path(info.state_dir) / "demo-serve"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    pod = ServePod(
        deployment=json.loads(kubectl("get", "deployment", f"{name}-vllm", "-n", NAMESPACE, "-o", "json")),
        pod_name=pods[0]["metadata"]["name"],
        namespace=NAMESPACE,
        claim=claim,
        workdir=workdir,
        sidecar_kubeconfig=token_kubeconfig(
            info, NAMESPACE, f"{name}-adapter-sync", workdir / "sa.kubeconfig"
        ),
    )

    def kubelet_sync() -> None:
        pod.write_adapters(json.loads(kubectl("get", "configmap", f"{name}-adapters", "-n", NAMESPACE,
                                              "-o", "json"))["data"])  # fmt: skip

    kubelet_sync()
    pod.mount_lora_guard(  # the middleware that keeps adapter loading to the sidecar
        json.loads(kubectl("get", "configmap", f"{name}-lora-guard", "-n", NAMESPACE, "-o", "json"))["data"]
    )
    pod.start()
    with console.status("vLLM (its CPU build) loads SmolLM2-135M-Instruct and the adapter"):
        seconds = pod.wait_ready()

        def served() -> bool:
            kubelet_sync()
            status = get(kubectl, "mserve", name).get("status") or {}
            return status.get("phase") == "Ready" and adapter in status.get("servedModels", [])

        localcluster.wait_for("the ModelServe to serve the adapter", served, timeout=180)
    console.print(
        f"  vLLM ready in {seconds:.0f}s on {pod.url}, {rss_mib(pod):.0f} MiB resident (logs: {workdir})"
    )
    return pod


def rss_mib(pod: ServePod) -> float:
    """The resident memory of vLLM's process and its children (the engine core), from /proc."""
    pids = [pod.processes["vllm"].pid]
    total = 0.0
    while pids:
        pid = pids.pop()
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        pids.extend(int(child) for child in children)
    return total / 1024


def compare(console: Console, pod: ServePod, mserve: dict[str, Any]) -> dict[str, list[str]]:
    """Three held-out sentences, answered greedily by the base model and by the adapter; the answers."""
    base = mserve["spec"]["model"]["servedModelName"]
    adapter = mserve["spec"]["adapters"][0]["name"]
    records = entities.heldout()[:SHOWN]
    answers: dict[str, list[str]] = {"sentences": [], "base": [], "adapter": []}
    table = Table(
        title="held-out sentences (never trained on): the base model beside the adapter", show_lines=True
    )
    for column in ("sentence", f"{base} (base)", f"{adapter} (LoRA)"):
        table.add_column(column, overflow="fold")
    started = time.monotonic()
    for record in records:
        answers["sentences"].append(record["input"])
        answers["base"].append(entities.ask(pod, base, record))
        answers["adapter"].append(entities.ask(pod, adapter, record))
        table.add_row(record["input"], *(verdict(answers[k][-1]) for k in ("base", "adapter")))
    console.print(f"[bold]POST /v1/chat/completions[/] (greedy), {time.monotonic() - started:.1f}s for all:")
    console.print(
        f"  [dim]system:[/] {records[0]['system']}  [dim]user:[/] {records[0]['instruction']} <sentence>"
    )
    console.print(table)
    return answers


def verdict(answer: str) -> str:
    found = entities.entities(answer)
    if found is None:
        return f"{answer.strip()[:300]}\n[red](not the JSON format)[/]"
    named = ", ".join(f"{e['label']}: {e['text']}" for e in found)
    return f"{answer.strip()}\n[green](JSON: {named})[/]"


def show_curves(console: Console, finetunejob: dict[str, Any], png: Path) -> None:
    """The run's loss curves from its status, as `kubetune plot` draws them: in the terminal, and a PNG."""
    from kubetune import plot

    try:
        console.print(
            plot.terminal_chart(finetunejob, width=min(console.width, 100), height=20), soft_wrap=True
        )
        plot.write_png(finetunejob, png)
    except RuntimeError as missing:  # the plot extra is not installed
        console.print(f"  (no curves: {missing})")
        return
    for line in plot.summary(finetunejob)[1:]:
        console.print(f"  {line}", soft_wrap=True)
    console.print(f"  the curves as a PNG: {png}  (kubetune plot ftj/NAME -o FILE.png)", soft_wrap=True)


def summary(console: Console, kubectl, name: str, serve_name: str) -> int:
    ftj = get(kubectl, "ftj", name)["status"]
    serve = get(kubectl, "mserve", serve_name)["status"]
    table = Table(title="kubetune demo", show_header=False)
    trained = f"{ftj['progress'].get('display', '')}, loss {ftj['progress'].get('loss', 0):.4f}"
    table.add_row("FineTuneJob", f"{name}: [bold green]{ftj['phase']}[/]  ({trained})")
    table.add_row("adapter", f"claim {ftj['output']['claim']}, {ftj['output']['adapterPath']}")
    ready = next(c["status"] for c in serve["conditions"] if c["type"] == "Ready")
    table.add_row("ModelServe", f"{serve_name}: [bold green]{serve['phase']}[/] (Ready={ready})")
    table.add_row("endpoint", serve["endpoint"])
    table.add_row("served models", ", ".join(serve["servedModels"]))
    console.print(table)
    console.print(kubectl("get", "ftj,mserve", "-n", NAMESPACE), soft_wrap=True)
    ok = ftj["phase"] == "Succeeded" and serve["phase"] == "Ready"
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
