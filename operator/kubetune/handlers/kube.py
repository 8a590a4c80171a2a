"""The few Kubernetes calls the operator makes, on the official client.

Children are written with server-side apply under one field manager (`kubetune`), forced, so the operator
owns exactly the fields it renders and applying the same manifest twice changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from kubetune.api import GROUP, VERSION
from kubetune.api.defaults import FIELD_MANAGER


@dataclass(frozen=True)
class Kind:
    api_version: str
    plural: str

    def path(self, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if namespace is not None:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{name}"
        if subresource is not None:
            base += f"/{subresource}"
        return base


KINDS = {
    "ConfigMap": Kind("v1", "configmaps"),
    "Secret": Kind("v1", "secrets"),
    "Service": Kind("v1", "services"),
    "ServiceAccount": Kind("v1", "serviceaccounts"),
    "Pod": Kind("v1", "pods"),
    "PersistentVolumeClaim": Kind("v1", "persistentvolumeclaims"),
    "Event": Kind("v1", "events"),
    "Role": Kind("rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": Kind("rbac.authorization.k8s.io/v1", "rolebindings"),
    "Job": Kind("batch/v1", "jobs"),
    "Deployment": Kind("apps/v1", "deployments"),
    "HorizontalPodAutoscaler": Kind("autoscaling/v2", "horizontalpodautoscalers"),
    "ScaledObject": Kind("keda.sh/v1alpha1", "scaledobjects"),
    "FineTuneJob": Kind(f"{GROUP}/{VERSION}", "finetunejobs"),
    "ModelServe": Kind(f"{GROUP}/{VERSION}", "modelserves"),
}


class Kube:
    """A thin, synchronous wrapper: JSON in, JSON out, no client models."""

    def __init__(self, api_client: client.ApiClient | None = None):
        self.api = api_client or client.ApiClient()

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None, pool_size: int = 32) -> Kube:
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        # One connection per worker thread: a smaller pool makes threads re-handshake TLS under load.
        configuration.connection_pool_maxsize = pool_size
        return cls(client.ApiClient(configuration))

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        method_, url, headers, body_, post = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(method_, url, header_params=headers, body=body_, post_params=post)
        data = response.read()
        if not 200 <= response.status < 300:
            text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
            raise ApiException.from_response(http_resp=response, body=text, data=None)
        return json.loads(data) if data else {}

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return self._call("GET", KINDS[kind].path(namespace, name))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: str | None, labels: dict[str, str] | None = None) -> list[dict]:
        query = []
        if labels:
            query.append(("labelSelector", ",".join(f"{k}={v}" for k, v in sorted(labels.items()))))
        return self._call("GET", KINDS[kind].path(namespace), query=query).get("items", [])

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply, forced: the operator's rendering is the truth for the fields it sets."""
        meta = manifest["metadata"]
        kind = KINDS[manifest["kind"]]
        return self._call(
            "PATCH",
            kind.path(meta.get("namespace"), meta["name"]),
            body=manifest,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        meta = manifest["metadata"]
        return self._call("POST", KINDS[manifest["kind"]].path(meta.get("namespace")), body=manifest)

    def patch_merge(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A merge patch (an update under the same field manager), for fields another actor may own too."""
        return self._call(
            "PATCH",
            KINDS[kind].path(namespace, name),
            body=patch,
            query=[("fieldManager", FIELD_MANAGER)],
            content_type="application/merge-patch+json",
        )

    def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """A merge patch of .status: only the fields given change; the launcher's fields are kept."""
        return self._call(
            "PATCH",
            KINDS[kind].path(namespace, name, "status"),
            body={"status": status},
            query=[("fieldManager", FIELD_MANAGER)],
            content_type="application/merge-patch+json",
        )

    def delete(self, kind: str, namespace: str, name: str, propagation: str = "Background") -> None:
        try:
            self._call(
                "DELETE",
                KINDS[kind].path(namespace, name),
                body={"propagationPolicy": propagation},
            )
        except ApiException as error:
            if error.status != 404:
                raise
