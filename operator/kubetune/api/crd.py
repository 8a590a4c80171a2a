"""CustomResourceDefinitions generated from the typed models (never written by hand).

pydantic gives a JSON Schema; Kubernetes wants a *structural* OpenAPI v3 schema: every node typed, no
`$ref`, no `anyOf` with null, no `additionalProperties: false`, free-form parts marked with
`x-kubernetes-preserve-unknown-fields`. Defaults stay out of the CRD (the operator applies them), so
the API server never writes fields a GitOps tool did not put there.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from kubetune.api import GROUP, VERSION
from kubetune.api import finetunejob as ftj
from kubetune.api import modelserve as ms

CATEGORIES = ["kubetune"]
_DROPPED_KEYS = {"title", "default", "additionalProperties", "$defs", "discriminator"}


def structural(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Turns a pydantic JSON Schema node into a structural OpenAPI v3 schema node."""
    defs = schema.get("$defs", {}) if defs is None else defs
    if "$ref" in schema:
        target = defs[schema["$ref"].split("/")[-1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return structural(merged, defs)
    if "anyOf" in schema:
        options = [s for s in schema["anyOf"] if s.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express a union of {len(options)} types structurally: {schema}")
        merged = {**options[0], **{k: v for k, v in schema.items() if k != "anyOf"}}
        return structural(merged, defs)
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        node = {"type": schema.get("type", "object"), "x-kubernetes-preserve-unknown-fields": True}
        if "description" in schema:
            node["description"] = schema["description"]
        if node["type"] == "array":
            node["items"] = schema.get(
                "items", {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
            )
        return node

    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "properties":
            out[key] = {name: structural(prop, defs) for name, prop in value.items()}
        elif key == "items":
            out[key] = structural(value, defs)
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            # JSON Schema 2020: `exclusiveMinimum: 0`; OpenAPI v3.0: `minimum: 0, exclusiveMinimum: true`.
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        else:
            out[key] = value
    additional = schema.get("additionalProperties")
    if isinstance(additional, dict):
        if additional.get("type") == "object" and not additional.get("properties"):
            out["additionalProperties"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        else:
            out["additionalProperties"] = structural(additional, defs)
    elif additional is True:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "type" not in out:
        out["type"] = "object" if "properties" in out else "string"
    return out


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    return structural(model.model_json_schema(by_alias=True, mode="validation"))


# Children and pod hostnames are named after the resource: a DNS label keeps every one of them valid.
NAME_RULE = {
    "rule": "self.metadata.name.size() <= 63"
    " && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
    "message": "metadata.name must be a DNS label: at most 63 lowercase letters, digits and '-'",
}

# Cross-field rules the API server checks (CEL), so bad input is refused at `kubectl apply`.
FINETUNEJOB_RULES: dict[str, list[dict[str, str]]] = {
    "": [
        {
            "rule": "!has(self.deepspeed) || !has(self.resources) || !has(self.resources.gpusPerNode)"
            " || self.resources.gpusPerNode >= 1",
            "message": "deepspeed needs GPUs: set resources.gpusPerNode >= 1 or remove deepspeed",
            "fieldPath": ".deepspeed",
        },
        {
            "rule": "!has(self.resources) || !has(self.resources.nodes) || self.resources.nodes == 1"
            " || !has(self.resources.gpusPerNode) || self.resources.gpusPerNode >= 1",
            "message": "multi-node training needs GPUs: set resources.gpusPerNode >= 1 or resources.nodes: 1",
            "fieldPath": ".resources.nodes",
        },
    ],
    "model": [
        {
            "rule": "!has(self.hubTokenSecret) || !self.source.startsWith('pvc://')",
            "message": "hubTokenSecret is only for hub sources (hf:// or ms://), not pvc://",
            "fieldPath": ".hubTokenSecret",
        },
        {
            "rule": "!has(self.revision) || !self.source.startsWith('pvc://')",
            "message": "revision is only for hub sources (hf:// or ms://), not pvc://",
            "fieldPath": ".revision",
        },
    ],
    "dataset": [
        {
            "rule": "has(self.info) != has(self.configMapRef)",
            "message": "set exactly one of dataset.info (dataset_info.json entries) and dataset.configMapRef",
        },
        {
            "rule": "!has(self.info) || self.names.all(n, n in self.info)"
            " && (!has(self.evalNames) || self.evalNames.all(n, n in self.info))",
            "message": "every name in dataset.names and dataset.evalNames needs an entry in dataset.info",
            "fieldPath": ".names",
        },
    ],
    "deepspeed": [
        {
            "rule": "has(self.preset) != has(self.configMapRef)",
            "message": "set exactly one of deepspeed.preset and deepspeed.configMapRef",
        },
    ],
    "podSecurity": [
        {
            "rule": "!has(self.runAsUser) || self.runAsUser != 0"
            " || (has(self.runAsNonRoot) && !self.runAsNonRoot)",
            "message": "podSecurity.runAsUser 0 is root: set podSecurity.runAsNonRoot: false as well",
            "fieldPath": ".runAsUser",
        },
    ],
    "storage": [
        {
            "rule": "self.claim == oldSelf.claim && (has(self.path) == has(oldSelf.path))"
            " && (!has(self.path) || self.path == oldSelf.path)",
            "message": "storage.claim and storage.path are immutable: earlier attempts wrote there",
        },
    ],
    "storage.path": [
        {
            "rule": "!self.matches('(^|/)[.][.](/|$)') && !self.matches('^[./]*$')",
            "message": "storage.path must stay on the claim: no '..', and not the claim's root",
        },
    ],
}


MODELSERVE_RULES: dict[str, list[dict[str, str]]] = {
    "model": FINETUNEJOB_RULES["model"][:1],
    "podSecurity": FINETUNEJOB_RULES["podSecurity"],
    "adapters": [
        {
            "rule": "self.all(a, has(a.path) != has(a.fineTuneJob))",
            "message": "each adapter needs exactly one of path and fineTuneJob",
        },
    ],
    "autoscaling": [
        {
            "rule": "!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",
            "message": "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
        },
        {
            "rule": "!has(self.provider) || self.provider != 'keda' || has(self.prometheusAddress)",
            "message": "autoscaling.prometheusAddress is needed when provider is keda",
        },
    ],
}


def _add_rules(spec_schema: dict[str, Any], rules: dict[str, list[dict[str, str]]]) -> None:
    for path, node_rules in rules.items():
        node = spec_schema
        for part in filter(None, path.split(".")):
            node = node["properties"][part]
        node["x-kubernetes-validations"] = node_rules


def _status_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model_schema(model)
    # Status is written by the operator and the launcher; keep it open so an older CRD never prunes a newer
    # operator's fields.
    schema["x-kubernetes-preserve-unknown-fields"] = True
    return schema


def finetunejob_crd() -> dict[str, Any]:
    spec = model_schema(ftj.FineTuneJobSpec)
    spec["description"] = "What to train, on what, and where to keep the results."
    _add_rules(spec, FINETUNEJOB_RULES)
    return _crd(
        plural=ftj.PLURAL,
        singular=ftj.SINGULAR,
        kind=ftj.KIND,
        short_names=ftj.SHORT_NAMES,
        description="A LLaMA-Factory fine-tuning run under torchrun and DeepSpeed on one or many GPU nodes.",
        spec=spec,
        status=_status_schema(ftj.FineTuneJobStatus),
        columns=[
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Progress", "type": "string", "jsonPath": ".status.progress.display"},
            {"name": "Loss", "type": "number", "jsonPath": ".status.progress.loss"},
            {"name": "Nodes x GPUs", "type": "string", "jsonPath": ".status.shape"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
            # -o wide only: the lowest eval loss and its step.
            {
                "name": "Best Eval Loss",
                "type": "number",
                "jsonPath": ".status.progress.bestEvalLoss",
                "priority": 1,
            },
            {
                "name": "Best Step",
                "type": "integer",
                "jsonPath": ".status.progress.bestEvalStep",
                "priority": 1,
            },
        ],
    )


def modelserve_crd() -> dict[str, Any]:
    spec = model_schema(ms.ModelServeSpec)
    spec["description"] = "The base model, the adapters and how vLLM serves them."
    _add_rules(spec, MODELSERVE_RULES)
    return _crd(
        plural=ms.PLURAL,
        singular=ms.SINGULAR,
        kind=ms.KIND,
        short_names=ms.SHORT_NAMES,
        description="vLLM serving a base model and LoRA adapters from the shared claim, OpenAI-compatible.",
        spec=spec,
        status=_status_schema(ms.ModelServeStatus),
        columns=[
            {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
            {"name": "Replicas", "type": "string", "jsonPath": ".status.replicasDisplay"},
            {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint"},
            {"name": "Adapters", "type": "string", "jsonPath": ".status.adaptersDisplay"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
        # An autoscaler (HPA, KEDA) and `kubectl scale` write spec.replicas through this; the operator
        # passes it on to the Deployment and never writes spec itself.
        scale={
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    )


def _crd(
    *,
    plural: str,
    singular: str,
    kind: str,
    short_names: list[str],
    description: str,
    spec: dict[str, Any],
    status: dict[str, Any],
    columns: list[dict[str, Any]],
    scale: dict[str, str] | None = None,
) -> dict[str, Any]:
    subresources: dict[str, Any] = {"status": {}}
    if scale:
        subresources["scale"] = scale
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": plural,
                "singular": singular,
                "kind": kind,
                "listKind": f"{kind}List",
                "shortNames": short_names,
                "categories": CATEGORIES,
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": subresources,
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "x-kubernetes-validations": [NAME_RULE],
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def all_crds() -> dict[str, dict[str, Any]]:
    """File name -> CRD, for `kubetune crds`."""
    crds = [finetunejob_crd(), modelserve_crd()]
    return {f"{crd['metadata']['name']}.yaml": crd for crd in crds}
