"""A ModelServe served by the real vLLM engine: the base model, adapters LLaMA-Factory trained, adapters
added, removed, retrained and refused, with the status the operator computes from what vLLM really loaded.

One vLLM process for the whole module (the tests run in order and build on each other): that it is never
restarted is itself one of the things checked.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from tests.cluster import localcluster
from tests.kube import wait_until
from tests.serve.conftest import run_trainer_python, train_adapter
from tests.serve.pod import ServePod, play
from tests.specs import modelserve

from kubetune import lora_guard
from kubetune.render import modelserve as render

# The first test also waits for the module's setup: a LoRA trained on the CPU and the engine started (a
# minute or two each on 2 busy cores), longer than the suite's 300 s.
pytestmark = pytest.mark.timeout(900)

GROUP, VERSION, PLURAL = "kubetune.io", "v1alpha1", "modelserves"
NAME = "tiny"
BY_HAND_BASE = "/data/models/Qwen2.5-7B-Instruct"  # where a user trained it by hand, on another box


@dataclass
class Stack:
    namespace: str
    claim: Path
    api: client.ApiClient
    pod: ServePod
    figures: dict[str, float]

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    def modelserve(self) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, NAME)

    def status(self) -> dict[str, Any]:
        return self.modelserve().get("status") or {}

    def set_adapters(self, adapters: list[dict[str, str]]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, NAME, {"spec": {"adapters": adapters}}
        )

    def adapters(self) -> list[dict[str, str]]:
        return list(self.modelserve()["spec"].get("adapters") or [])

    def kubelet_sync(self) -> dict[str, str]:
        """The kubelet's refresh of the mounted adapters ConfigMap (seconds to a minute in a cluster)."""
        data = self.core.read_namespaced_config_map(f"{NAME}-adapters", self.namespace).data
        self.pod.write_adapters(data)
        return json.loads(data[render.ADAPTERS_FILE])

    def until_config_has(self, names: set[str], timeout: float = 60) -> None:
        wait_until(
            lambda: set(self.kubelet_sync()) == names, f"the adapters ConfigMap to hold {names}", timeout
        )

    def adapter_status(self, name: str) -> dict[str, Any]:
        return next((a for a in self.status().get("adapters") or [] if a["name"] == name), {})

    def logprobs(self, model: str) -> list[float] | None:
        """The top log-probabilities of the next token: what tells one set of weights from another.

        None while the adapter is being swapped (unloaded, then loaded under a new id: under a second).
        """
        code, body = self.pod.complete(model, tokens=1)
        if code == 404:
            return None
        assert code == 200, body
        return sorted(body["choices"][0]["logprobs"]["top_logprobs"][0].values())


def modelserve_body(adapters: list[dict[str, str]]) -> dict[str, Any]:
    return modelserve(
        NAME,
        adapters,
        model={"source": "pvc://shared/models/tiny", "servedModelName": "tiny-base"},
        replicas=1,
        # On CPU: vLLM's CPU build, a small KV cache; float32, as the tiny model was saved.
        resources={"gpus": 0, "cpu": "2", "memory": "6Gi"},
        engine={"dtype": "float32", "maxModelLen": 256, "cpuKvCacheGib": 1},
    )


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and its descendants (vLLM's API server, engine core, worker)."""
    children: dict[int, list[int]] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        children.setdefault(int(fields.get("PPid", "0").strip()), []).append(int(status.parent.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            rss = next(
                line
                for line in Path(f"/proc/{current}/status").read_text().splitlines()
                if line.startswith("VmRSS")
            )
        except (OSError, StopIteration):
            continue
        total += int(rss.split()[1])
    return total / 1024


@pytest.fixture(scope="module")
def stack(
    cluster: localcluster.ClusterInfo,
    crds: None,
    operator: Any,
    api: client.ApiClient,
    serve_namespace: str,
    serve_claim: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("serve-work")
    figures: dict[str, float] = {}
    started = time.monotonic()
    trained = train_adapter(serve_claim, serve_namespace, "ner", workdir, learning_rate=1.0e-2)
    figures["train_seconds"] = time.monotonic() - started
    adapters = serve_claim / "adapters"
    run_trainer_python(
        ["-m", "tests.serve.make_adapters", str(serve_claim / "models" / "tiny"), str(adapters)], workdir
    )
    # An adapter as a user brings it, trained by hand from another path to the same model.
    shutil.copytree(trained, adapters / "byhand", ignore=shutil.ignore_patterns("checkpoint-*"))
    config = json.loads((adapters / "byhand" / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = BY_HAND_BASE
    (adapters / "byhand" / "adapter_config.json").write_text(json.dumps(config, indent=2))
    shutil.copytree(trained, adapters / "retrain", ignore=shutil.ignore_patterns("checkpoint-*"))

    custom = client.CustomObjectsApi(api)
    ner_path = str(trained.relative_to(serve_claim))
    custom.create_namespaced_custom_object(
        GROUP, VERSION, serve_namespace, PLURAL, modelserve_body([{"name": "ner", "path": ner_path}])
    )
    pod = play(cluster, api, serve_namespace, NAME, serve_claim, workdir)
    stack = Stack(serve_namespace, serve_claim, api, pod, figures)
    pod.start()
    try:
        figures["ready_seconds"] = pod.wait_ready()
        figures["vllm_rss_mib"] = tree_rss_mib(pod.processes["vllm"].pid)
        yield stack
    finally:
        pod.stop()
        print("\nserve figures:", json.dumps({k: round(v, 2) for k, v in figures.items()}))


def test_the_base_and_the_trained_adapter_are_listed(stack: Stack) -> None:
    models = stack.pod.models()
    assert models[0] == "tiny-base" and "ner" in models, models


def test_completions_on_the_base_and_on_the_adapter(stack: Stack) -> None:
    for model in ("tiny-base", "ner"):
        started = time.monotonic()
        code, body = stack.pod.complete(model, tokens=1)
        stack.figures[f"first_token_seconds_{model}"] = time.monotonic() - started
        assert code == 200, body
        assert body["model"] == model and body["choices"][0]["text"] is not None
    assert stack.logprobs("ner") != stack.logprobs("tiny-base"), "the adapter changes what the model says"


def test_the_status_says_what_vllm_loaded(stack: Stack) -> None:
    wait_until(lambda: stack.adapter_status("ner").get("ready"), "ner reported loaded", timeout=60)
    status = stack.status()
    assert status["phase"] == "Ready", status
    assert status["servedModels"] == ["tiny-base", "ner"]
    assert stack.adapter_status("ner")["loadedReplicas"] == 1
    report = stack.core.read_namespaced_config_map(f"{NAME}-adapter-report", stack.namespace).data
    ner = json.loads(report[stack.pod.pod_name])["adapters"]["ner"]
    assert (ner["state"], ner["claimPath"]) == ("Loaded", f"runs/{stack.namespace}/ner")


def test_a_client_cannot_load_or_unload_adapters(stack: Stack) -> None:
    """The management API is the sidecar's: a client of the Service (no token, a wrong one) is refused, and
    the production adapter goes on serving."""
    before = stack.logprobs("ner")
    other = str(stack.claim / "adapters" / "v2")
    for headers in ({}, {lora_guard.TOKEN_HEADER: "guessed"}, {"Authorization": "Bearer anything"}):
        for method, path, body in (
            ("POST", "/v1/unload_lora_adapter", {"lora_name": "ner"}),
            ("POST", "/v1/unload_lora_adapter/", {"lora_name": "ner"}),
            ("POST", "/v1/load_lora_adapter", {"lora_name": "ner", "lora_path": other}),
            ("POST", "/v1/load_lora_adapter", {"lora_name": "intruder", "lora_path": other}),
            # The same handlers where vLLM mounts them for the SageMaker standard.
            ("POST", "/adapters", {"name": "intruder", "src": other}),
            ("DELETE", "/adapters/ner", None),
        ):
            code, answer = stack.pod.request(method, path, body, headers)
            assert code == 403, (method, path, headers, code, answer)
            assert "adapter-sync sidecar only" in answer["error"]["message"]
    assert "intruder" not in stack.pod.models()
    assert stack.logprobs("ner") == before, "ner still serves its own weights"
    assert stack.adapter_status("ner").get("ready"), stack.status()


def test_a_path_swapped_behind_the_sidecars_back_is_noticed_and_loaded_again(stack: Stack) -> None:
    """Other weights loaded under a production name (by anyone holding the token): the sidecar compares the
    path vLLM serves it from with the one it should, and loads the right one again."""
    stack.kubelet_sync()
    desired = json.loads((stack.pod.config_dir / render.ADAPTERS_FILE).read_text())["ner"]  # as mounted
    reference = stack.logprobs("ner")
    other = str(stack.claim / "adapters" / "v2")

    def swapped() -> bool:  # the sidecar may load ner back between the two calls: then again
        stack.pod.manage("/v1/unload_lora_adapter", {"lora_name": "ner"})
        return stack.pod.manage("/v1/load_lora_adapter", {"lora_name": "ner", "lora_path": other})[0] == 200

    wait_until(swapped, "ner loaded from another path", timeout=60, interval=0.1)
    wait_until(
        lambda: stack.pod.served_paths().get("ner") == desired,
        "the sidecar to load ner from its own path again",
        timeout=60,
        interval=1,
    )
    wait_until(lambda: stack.logprobs("ner") == reference, "ner to serve its own weights", timeout=60)
    assert "was served from" in stack.pod.log_tail("adapter-sync", 200)
    assert stack.adapter_status("ner").get("ready") and stack.status()["phase"] == "Ready"


def test_an_adapter_added_is_served_by_the_same_process(stack: Stack) -> None:
    pid = stack.pod.processes["vllm"].pid
    started = time.monotonic()
    stack.set_adapters([*stack.adapters(), {"name": "byhand", "path": "adapters/byhand"}])
    # The mounted file is left as it was: the sidecar's watch of the ConfigMap alone brings the edit (a
    # kubelet refreshes the file about a minute later).
    wait_until(
        lambda: stack.pod.complete("byhand", tokens=1)[0] == 200,
        "the new adapter to answer",
        30,
        interval=0.2,
    )
    stack.figures["edit_to_first_completion_seconds"] = time.monotonic() - started
    assert stack.pod.processes["vllm"].pid == pid and stack.pod.processes["vllm"].poll() is None
    # Trained from /data/models/... (not the --model path): served, and its files are as the user left them.
    config = json.loads((stack.claim / "adapters" / "byhand" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == BY_HAND_BASE
    wait_until(
        lambda: "byhand" in stack.status().get("servedModels", []), "byhand in servedModels", timeout=60
    )


def test_a_removed_adapter_answers_404_and_is_unloaded(stack: Stack) -> None:
    started = time.monotonic()
    stack.set_adapters([a for a in stack.adapters() if a["name"] != "byhand"])
    wait_until(
        lambda: stack.pod.complete("byhand", tokens=1)[0] == 404, "byhand to answer 404", 60, interval=0.2
    )
    stack.figures["edit_to_404_seconds"] = time.monotonic() - started
    assert "byhand" not in stack.pod.models()
    wait_until(lambda: "byhand" not in stack.status().get("servedModels", []), "byhand gone from status", 60)


def test_new_weights_under_an_old_name_are_served(stack: Stack) -> None:
    """vLLM keeps an adapter's old weights under a reused name unless told (its issue #54839)."""
    stack.set_adapters(
        [
            *stack.adapters(),
            {"name": "reference-v2", "path": "adapters/v2"},
            {"name": "sql", "path": "adapters/retrain"},
        ]
    )
    stack.until_config_has({"ner", "reference-v2", "sql"})
    wait_until(lambda: stack.pod.complete("sql", tokens=1)[0] == 200, "sql to be served", timeout=60)
    reference = stack.logprobs("reference-v2")
    before = stack.logprobs("sql")
    assert None not in (reference, before) and before != reference

    # Retrained into the same directory: the sidecar sees new files and vLLM serves them.
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copyfile(stack.claim / "adapters" / "v2" / name, stack.claim / "adapters" / "retrain" / name)
    wait_until(lambda: stack.logprobs("sql") == reference, "sql to serve the retrained weights", timeout=60)

    # A name moved to another job's adapter: the same.
    adapters = [a for a in stack.adapters() if a["name"] != "ner"] + [{"name": "ner", "path": "adapters/v2"}]
    stack.set_adapters(adapters)
    wait_until(
        lambda: stack.kubelet_sync()["ner"].endswith("adapters/v2") and stack.logprobs("ner") == reference,
        "ner to serve the adapter it was moved to",
        timeout=60,
    )


@pytest.mark.parametrize(
    ("name", "path", "words"),
    [
        ("rank32", "adapters/rank32", "rank 32 is above the server's --max-lora-rank 16"),
        ("saves-modules", "adapters/modules-to-save", "modules_to_save"),
        ("other-base", "adapters/other-base", "trained on another base model"),
        ("missing", "adapters/not-there", "does not exist"),
    ],
)
def test_an_adapter_vllm_cannot_serve_is_degraded_not_ready(
    stack: Stack, name: str, path: str, words: str
) -> None:
    stack.set_adapters([*stack.adapters(), {"name": name, "path": path}])
    wait_until(lambda: name in stack.kubelet_sync(), f"{name} in the adapters ConfigMap", timeout=60)
    wait_until(
        lambda: stack.adapter_status(name).get("reason") == "AdapterLoadFailed", f"{name} reported failed", 60
    )
    adapter, status = stack.adapter_status(name), stack.status()
    assert words in adapter["message"] and not adapter["ready"], adapter
    assert status["phase"] == "Degraded" and name not in status["servedModels"], status
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and name in degraded["message"]
    # The server goes on serving the rest.
    assert stack.pod.complete("tiny-base", tokens=1)[0] == 200
    assert stack.pod.complete("reference-v2", tokens=1)[0] == 200
    stack.set_adapters([a for a in stack.adapters() if a["name"] != name])
    wait_until(lambda: stack.status().get("phase") == "Ready", "Ready again once it is removed", timeout=60)


def test_vllm_itself_refuses_what_the_sidecar_refuses_and_stays_up(stack: Stack) -> None:
    """Why the sidecar checks first: vLLM's own answer to the same adapters, asked directly."""
    answers = {}
    for name in ("rank32", "modules-to-save", "other-base"):
        code, body = stack.pod.manage(  # as the sidecar asks: with the pod's token
            "/v1/load_lora_adapter",
            {"lora_name": f"direct-{name}", "lora_path": str(stack.claim / "adapters" / name)},
        )
        answers[name] = (code, json.dumps(body)[:300])
        assert stack.pod.request("GET", "/health")[0] == 200, f"vLLM went down after {name}: {answers}"
        if code == 200:
            stack.pod.manage("/v1/unload_lora_adapter", {"lora_name": f"direct-{name}"})
    print("\nvLLM's own answers:", json.dumps(answers, indent=1))
    assert answers["rank32"][0] != 200
    assert stack.pod.complete("tiny-base", tokens=1)[0] == 200


def test_the_dashboards_vllm_metrics_are_in_a_scrape_of_vllm(stack: Stack) -> None:
    """The chart's Grafana dashboard reads only metrics this vLLM exposes (tests/unit/test_dashboard)."""
    import urllib.request

    from tests.unit.test_dashboard import expressions, metric_names, scraped

    assert stack.pod.complete("ner", tokens=1)[0] == 200  # a request on an adapter: every series is there
    with urllib.request.urlopen(stack.pod.url + "/metrics", timeout=10) as response:
        exposed = scraped(response.read().decode())
    used = {name for e in expressions() for name in metric_names(e) if name.startswith("vllm:")}
    assert {"vllm:time_to_first_token_seconds_bucket", "vllm:lora_requests_info"} <= used
    assert used - exposed == set()
