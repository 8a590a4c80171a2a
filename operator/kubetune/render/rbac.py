"""A pod's own narrow rights, as both kinds give them: a ServiceAccount, a Role of a few rules, and the
RoleBinding between them (the launcher's progress reports; the adapter-sync sidecar's report)."""

from __future__ import annotations

from typing import Any

RBAC_API = "rbac.authorization.k8s.io/v1"


def service_account(metadata: dict[str, Any], automount: bool | None = None) -> dict[str, Any]:
    account: dict[str, Any] = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata}
    if automount is not None:
        account["automountServiceAccountToken"] = automount
    return account


def role(metadata: dict[str, Any], rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": RBAC_API, "kind": "Role", "metadata": metadata, "rules": rules}


def role_binding(metadata: dict[str, Any], role_name: str, service_account_name: str) -> dict[str, Any]:
    return {
        "apiVersion": RBAC_API,
        "kind": "RoleBinding",
        "metadata": metadata,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role_name},
        "subjects": [
            {"kind": "ServiceAccount", "name": service_account_name, "namespace": metadata["namespace"]}
        ],
    }
