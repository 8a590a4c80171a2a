"""Helpers for FineTuneJob scenarios: driving the resources and reading what the operator did (the bodies
themselves come from tests/specs.py)."""

from __future__ import annotations

from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.kube import wait_until

GROUP, VERSION, PLURAL = "kubetune.io", "v1alpha1", "finetunejobs"


class KubetuneResources:
    """One kind of kubetune resource in one namespace, as a test drives it."""

    plural = ""

    def __init__(self, api: client.ApiClient, namespace: str):
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, self.plural, body)

    def get(self, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, self.plural, name)

    def patch(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, self.plural, name, patch
        )

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, self.plural, name)

    def exists(self, name: str) -> bool:
        try:
            self.get(name)
            return True
        except ApiException as error:
            if error.status == 404:
                return False
            raise

    def status(self, name: str) -> dict[str, Any]:
        return self.get(name).get("status") or {}

    def condition(self, name: str, type_: str) -> dict[str, Any]:
        for condition in self.status(name).get("conditions") or []:
            if condition["type"] == type_:
                return condition
        return {}

    def wait(self, name: str, check, what: str, timeout: float = 60) -> dict[str, Any]:
        return wait_until(lambda: (s := self.status(name)) and check(s) and s, what, timeout=timeout)


class FineTuneJobs(KubetuneResources):
    plural = PLURAL

    def wait_phase(self, name: str, phase: str, timeout: float = 60) -> dict[str, Any]:
        return wait_until(
            lambda: (s := self.status(name)).get("phase") == phase and s,
            f"FineTuneJob {name} to be {phase}",
            timeout=timeout,
        )

    def wait_reason(self, name: str, reason: str, timeout: float = 60) -> dict[str, Any]:
        return wait_until(
            lambda: (s := self.status(name)).get("reason") == reason and s,
            f"FineTuneJob {name} to have reason {reason}",
            timeout=timeout,
        )


FTJ_LABEL = "kubetune.io/finetunejob"


def jobs_of(batch: client.BatchV1Api, namespace: str, name: str) -> list[client.V1Job]:
    """The training Jobs labelled for a FineTuneJob (whoever owns them)."""
    return batch.list_namespaced_job(namespace, label_selector=f"{FTJ_LABEL}={name}").items


def pods_of(core: client.CoreV1Api, namespace: str, name: str, attempt: int | None = None) -> list:
    selector = f"{FTJ_LABEL}={name}" + (f",kubetune.io/attempt={attempt}" if attempt else "")
    return core.list_namespaced_pod(namespace, label_selector=selector).items


def job_condition(job: client.V1Job, type_: str) -> client.V1JobCondition | None:
    return next((c for c in job.status.conditions or [] if c.type == type_ and c.status == "True"), None)


def delete_orphaning(ftjs: KubetuneResources, name: str) -> None:
    """`kubectl delete --cascade=orphan`: the children stay, without their owner."""
    ftjs.custom.delete_namespaced_custom_object(
        GROUP, VERSION, ftjs.namespace, ftjs.plural, name, propagation_policy="Orphan"
    )
