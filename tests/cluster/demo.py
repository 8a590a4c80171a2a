"""`make demo`: from a FineTuneJob to an adapter served by a ModelServe, on the local control plane.

1. the local control plane (built the first time) and its fake GPU nodes;
2. the Helm chart's CRDs and RBAC, and the operator running as the chart's ServiceAccount;
3. examples/demo/finetunejob.yaml: its pod lands on a fake GPU node (KWOK), and the trainer runs here on the
   CPU exactly as that pod would run it (`kubetune launch`, real LLaMA-Factory, a tiny Qwen2 built on the
   spot), reporting real progress into the FineTuneJob's status, shown as a progress bar;
4. examples/demo/modelserve.yaml: vLLM's Deployment for the base model and the adapter just trained; its
   pod lands on a fake node, and this machine runs that pod's containers as the kubelet would (the real
   vLLM, its CPU build, and the adapter-sync sidecar: tests/serve/pod.py), until the ModelServe is Ready
   with the adapter served; then a real completion from the adapter is printed.
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
from tests.serve.pod import ServePod

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "examples" / "demo"
NAMESPACE = "kubetune-demo"
TRAINER_PYTHON = os.environ.get(
    "KUBETUNE_TRAINER_PYTHON", str(Path.home() / ".cache" / "kubetune" / "trainer-venv" / "bin" / "python")
)
GROUP, VERSION = "kubetune.io", "v1alpha1"


def main() -> int:
    console = Console()
    console.rule("[bold]kubetune demo")
    with console.status("starting the local control plane (the first run builds it from source)"):
        info = localcluster.up()
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
    with console.status("building a tiny Qwen2 model on the claim (no download)"):
        build_tiny_model(claim)
    operator, operator_log = start_operator(info)
    console.print(f"operator running as the chart's ServiceAccount (log: {operator_log})")
    try:
        return run(console, info, kubectl, claim)
    finally:
        operator.terminate()
        operator.wait(timeout=20)
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
    shutil.copyfile(DEMO / "data" / "sample-ner.json", claim / "datasets" / "sample-ner.json")
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


def build_tiny_model(claim: Path) -> None:
    dest = claim / "models" / "tiny-qwen2"
    config = dest / "config.json"
    # Kept from an earlier demo, unless it has heads of 16 (before vLLM's CPU build served it).
    if config.exists() and json.loads(config.read_text()).get("num_attention_heads") == 2:
        return
    code = (
        "import sys; from pathlib import Path; from tests.worker.tinymodel import build_tiny_model; "
        "build_tiny_model(Path(sys.argv[1]), [Path(sys.argv[2])])"
    )
    subprocess.run(
        [TRAINER_PYTHON, "-c", code, str(dest), str(DEMO / "data" / "sample-ner.json")],
        cwd=REPO, check=True, capture_output=True,
    )  # fmt: skip


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


def run(console: Console, info: localcluster.ClusterInfo, kubectl, claim: Path) -> int:
    from tests.worker.pod import materialise

    ftj = yaml.safe_load((DEMO / "finetunejob.yaml").read_text())
    name = ftj["metadata"]["name"]
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
    pod = serve(console, info, kubectl, claim)
    try:
        code = summary(console, kubectl, name)
        complete(console, pod)
        return code
    finally:
        pod.stop()


def serve(console: Console, info: localcluster.ClusterInfo, kubectl, claim: Path) -> ServePod:
    """Runs the ModelServe pod's containers here, as its kubelet would, until the adapter is served."""
    pods = localcluster.wait_for(
        "KWOK to run the ModelServe's pod",
        lambda: [
            p
            for p in json.loads(kubectl("get", "pods", "-n", NAMESPACE, "-l", "kubetune.io/modelserve=tiny",
                                        "-o", "json"))["items"]
            if p["status"].get("phase") == "Running"
        ],
        timeout=60,
    )  # fmt: skip
    workdir = Path(info.state_dir) / "demo-serve"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    pod = ServePod(
        deployment=json.loads(kubectl("get", "deployment", "tiny-vllm", "-n", NAMESPACE, "-o", "json")),
        pod_name=pods[0]["metadata"]["name"],
        namespace=NAMESPACE,
        claim=claim,
        workdir=workdir,
        sidecar_kubeconfig=token_kubeconfig(info, NAMESPACE, "tiny-adapter-sync", workdir / "sa.kubeconfig"),
    )

    def kubelet_sync() -> None:
        pod.write_adapters(json.loads(kubectl("get", "configmap", "tiny-adapters", "-n", NAMESPACE,
                                              "-o", "json"))["data"])  # fmt: skip

    kubelet_sync()
    pod.mount_lora_guard(  # the middleware that keeps adapter loading to the sidecar
        json.loads(kubectl("get", "configmap", "tiny-lora-guard", "-n", NAMESPACE, "-o", "json"))["data"]
    )
    pod.start()
    with console.status("vLLM (its CPU build) loads the tiny model and the adapter"):
        seconds = pod.wait_ready()

        def served() -> bool:
            kubelet_sync()
            status = get(kubectl, "mserve", "tiny").get("status") or {}
            return status.get("phase") == "Ready" and "ner" in status.get("servedModels", [])

        localcluster.wait_for("the ModelServe to serve the adapter", served, timeout=180)
    console.print(f"  vLLM ready in {seconds:.0f}s on {pod.url} (logs: {workdir})")
    return pod


def complete(console: Console, pod: ServePod) -> None:
    record = json.loads((DEMO / "data" / "sample-ner.json").read_text())[0]
    prompt = f"{record['instruction']}\n{record['input']}"
    started = time.monotonic()
    code, body = pod.request(
        "POST",
        "/v1/chat/completions",
        {
            "model": "ner",
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 24,
            "temperature": 0,
        },
    )
    if code != 200:
        console.print(f"[red]the adapter did not answer[/] ({code}): {body}")
        return
    answer = body["choices"][0]["message"]["content"]
    console.print(f"[bold]POST /v1/chat/completions[/] model=ner ({time.monotonic() - started:.2f}s):")
    console.print(f"  [dim]user:[/] {prompt[:120]}")
    console.print(
        f"  [dim]ner:[/]  {answer!r}  [dim](a tiny random model after a few steps: the words are noise)[/]"
    )


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


def summary(console: Console, kubectl, name: str) -> int:
    ftj = get(kubectl, "ftj", name)["status"]
    serve = get(kubectl, "mserve", "tiny")["status"]
    table = Table(title="kubetune demo", show_header=False)
    trained = f"{ftj['progress'].get('display', '')}, loss {ftj['progress'].get('loss', 0):.4f}"
    table.add_row("FineTuneJob", f"{name}: [bold green]{ftj['phase']}[/]  ({trained})")
    table.add_row("adapter", f"claim {ftj['output']['claim']}, {ftj['output']['adapterPath']}")
    ready = next(c["status"] for c in serve["conditions"] if c["type"] == "Ready")
    table.add_row("ModelServe", f"tiny: [bold green]{serve['phase']}[/] (Ready={ready})")
    table.add_row("endpoint", serve["endpoint"])
    table.add_row("served models", ", ".join(serve["servedModels"]))
    console.print(table)
    console.print(kubectl("get", "ftj,mserve", "-n", NAMESPACE), soft_wrap=True)
    ok = ftj["phase"] == "Succeeded" and serve["phase"] == "Ready"
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
