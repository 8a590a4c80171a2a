"""The Overfitting verdict, end to end: the launcher's history in a FineTuneJob's status (written here as
its scoped token would write it) -> the running operator's condition, Warning Event and best checkpoint."""

from __future__ import annotations

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from kubetune.status import curves
from tests.integration.finetunejobs import GROUP, PLURAL, VERSION, FineTuneJobs
from tests.kube import wait_until
from tests.specs import finetunejob, with_pod_annotations
from tests.unit.test_curves import overfitting_curve


def test_a_rising_eval_loss_becomes_a_warning_and_names_the_best_checkpoint(
    namespace: str, claim: tuple[str, object], api: client.ApiClient, core: client.CoreV1Api, operator
) -> None:
    ftjs = FineTuneJobs(api, namespace)
    ftjs.create(with_pod_annotations(finetunejob("overfits"), **{"test.kubetune.io/hold": "true"}))
    ftjs.wait_phase("overfits", "Running")
    custom = client.CustomObjectsApi(api)

    def report(points: list[dict]) -> None:
        """As the launcher reports: the history thinned to the bound (the CRD refuses more)."""
        progress = {"step": points[-1]["step"], "history": curves.thin(points)}
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, "overfits", {"status": {"progress": progress}}
        )

    history = curves.mark_checkpoints(overfitting_curve(), [200, 400, 600])
    report([p for p in history if p["step"] <= 500])  # one evaluation past the best: not yet
    status = ftjs.wait(
        "overfits",
        lambda s: any(c["type"] == "Overfitting" for c in s.get("conditions", [])),
        "the Overfitting condition",
        timeout=30,
    )
    assert ftjs.condition("overfits", "Overfitting")["status"] == "False"
    assert status["output"]["bestCheckpoint"].endswith("/checkpoint-400")

    report(history)  # three more evaluations above the best while the training loss falls
    status = ftjs.wait(
        "overfits",
        lambda s: ftjs.condition("overfits", "Overfitting").get("status") == "True",
        "Overfitting=True",
        timeout=30,
    )
    condition = ftjs.condition("overfits", "Overfitting")
    assert condition["reason"] == "EvalLossRising"
    assert "at step 400" in condition["message"]
    assert condition["message"].endswith(f"best checkpoint: {status['output']['bestCheckpoint']}")
    assert status["phase"] == "Running", "a warning: the run goes on"
    events = wait_until(
        lambda: [
            e
            for e in core.list_namespaced_event(namespace).items
            if e.reason == "Overfitting" and e.involved_object.name == "overfits"
        ],
        "the Overfitting Event",
        timeout=30,
    )
    assert events[0].type == "Warning" and "at step 400" in events[0].message

    # The bound is the API server's too: a longer history is refused, whoever writes it.
    too_long = {"status": {"progress": {"history": history[: curves.HISTORY_LIMIT + 1]}}}
    with pytest.raises(ApiException) as refused:
        custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "overfits", too_long)
    assert refused.value.status == 422 and "must have at most 200 items" in refused.value.body
