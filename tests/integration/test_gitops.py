"""GitOps: the shipped Argo CD health checks (Lua) on real status objects; no drift from the operator."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from lupa import LuaRuntime

from tests.integration.finetunejobs import FineTuneJobs
from tests.integration.test_modelserve import ModelServes
from tests.specs import finetunejob, modelserve, with_pod_annotations

pytestmark = pytest.mark.usefixtures("operator")

ARGOCD = Path(__file__).resolve().parents[2] / "gitops" / "argocd"


def argocd_health(kind: str, obj: dict[str, Any]) -> dict[str, str]:
    """Runs the shipped health script as Argo CD does: `obj` is the live object, the script returns hs."""
    lua = LuaRuntime(unpack_returned_tuples=True)
    script = (ARGOCD / f"{kind.lower()}-health.lua").read_text()
    check = lua.eval(f"function(obj)\n{script}\nend")
    result = check(lua.table_from(obj, recursive=True))
    return {"status": result["status"], "message": result["message"]}


@pytest.mark.parametrize("kind", ["FineTuneJob", "ModelServe"])
def test_a_new_object_without_status_is_progressing(kind: str) -> None:
    obj = {"metadata": {"name": "x", "generation": 1}, "spec": {}}
    assert argocd_health(kind, obj)["status"] == "Progressing"


def test_finetunejob_health_follows_its_phase(
    namespace: str, claim: tuple[str, object], api: client.ApiClient
) -> None:
    ftjs = FineTuneJobs(api, namespace)
    ftjs.create(finetunejob("done"))
    bad = finetunejob("typo")
    bad["spec"]["config"]["lora_rnak"] = 8
    ftjs.create(bad)
    ftjs.create(finetunejob("too-big", resources={"nodes": 1, "gpusPerNode": 16}))
    ftjs.create(with_pod_annotations(finetunejob("training"), **{"test.kubetune.io/hold": "true"}))
    ftjs.create(
        with_pod_annotations(finetunejob("paused", suspend=True), **{"test.kubetune.io/hold": "true"})
    )

    ftjs.wait_phase("done", "Succeeded")
    ftjs.wait_phase("typo", "Failed")
    ftjs.wait_reason("too-big", "Unschedulable")
    ftjs.wait_phase("training", "Running")
    ftjs.wait_phase("paused", "Suspended")

    health = {name: argocd_health("FineTuneJob", ftjs.get(name)) for name in
              ("done", "typo", "too-big", "training", "paused")}  # fmt: skip
    assert {name: h["status"] for name, h in health.items()} == {
        "done": "Healthy",
        "typo": "Degraded",
        "too-big": "Progressing",
        "training": "Progressing",
        "paused": "Suspended",
    }
    assert "lora_rnak" in health["typo"]["message"]
    assert "Insufficient nvidia.com/gpu" in health["too-big"]["message"]

    # A spec the operator has not acted on yet is not reported healthy on the strength of an old status.
    stale = copy.deepcopy(ftjs.get("done"))
    stale["metadata"]["generation"] += 1
    assert argocd_health("FineTuneJob", stale)["status"] == "Progressing"


def test_modelserve_health_follows_its_phase(
    namespace: str, claim: tuple[str, object], api: client.ApiClient
) -> None:
    ftjs, serves = FineTuneJobs(api, namespace), ModelServes(api, namespace)
    ftjs.create(with_pod_annotations(finetunejob("failing"), **{"test.kubetune.io/exit-code": "1"}))
    ftjs.wait_phase("failing", "Failed", timeout=60)
    serves.create(modelserve("healthy"))
    serves.create(modelserve("broken", adapters=[{"name": "a", "fineTuneJob": "failing"}]))
    no_claim = modelserve("elsewhere")
    no_claim["spec"]["storage"]["claim"] = "missing"
    no_claim["spec"]["model"]["source"] = "pvc://missing/models/qwen"
    serves.create(no_claim)

    serves.wait("healthy", lambda s: s.get("phase") == "Ready", "healthy to be Ready")
    serves.wait("broken", lambda s: s.get("phase") == "Degraded", "broken to be Degraded")
    serves.wait("elsewhere", lambda s: s.get("reason") == "MissingClaim", "elsewhere to wait for its claim")
    assert argocd_health("ModelServe", serves.get("healthy"))["status"] == "Healthy"
    assert argocd_health("ModelServe", serves.get("broken"))["status"] == "Degraded"
    waiting = argocd_health("ModelServe", serves.get("elsewhere"))
    assert waiting["status"] == "Progressing" and "missing" in waiting["message"]


def test_the_operator_never_writes_spec(
    namespace: str, claim: tuple[str, object], api: client.ApiClient
) -> None:
    """Argo CD compares spec with Git: the operator's writes must all go to status."""
    ftjs, serves = FineTuneJobs(api, namespace), ModelServes(api, namespace)
    ftjs.create(finetunejob("job"))
    serves.create(modelserve("serve"))
    ftjs.wait_phase("job", "Succeeded")
    serves.wait("serve", lambda s: s.get("phase") == "Ready", "Ready")
    for obj in (ftjs.get("job"), serves.get("serve")):
        operator_entries = [m for m in obj["metadata"]["managedFields"] if m["manager"] == "kubetune"]
        assert operator_entries, "the operator's writes are recorded under its field manager"
        assert all(m.get("subresource") == "status" for m in operator_entries), operator_entries
        assert all("f:spec" not in m.get("fieldsV1", {}) for m in operator_entries)
