"""CustomResourceDefinitions generated from the typed models (never written by hand).

pydantic gives a JSON Schema; Kubernetes wants a *structural* OpenAPI v3 schema: every node typed, no
`$ref`, no `anyOf` with null, no `additionalProperties: false`, free-form parts marked with
`x-kubernetes-preserve-unknown-fields`. The CEL rules come with the models (`kubetune.api.cel`: declared
beside the fields they guard). Defaults stay out of the CRD (the operator applies them), so
the API server never writes fields a GitOps tool did not put there.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from kubetune.api import GROUP, VERSION
from kubetune.api import finetunejob as ftj
from kubetune.api import modelserve as ms
from kubetune.api.cel import VALIDATIONS
from kubetune.api.common import NAME_RULE

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
    return _rules_last(out)


def _rules_last(node: dict[str, Any]) -> dict[str, Any]:
    """The CEL rules declared on the models (kubetune.api.cel) last in their node, each as Kubernetes
    writes one (pydantic sorts the keys of what it generates)."""
    if VALIDATIONS in node:
        order = ("rule", "message", "messageExpression", "fieldPath")
        node[VALIDATIONS] = [{k: r[k] for k in order if k in r} for r in node.pop(VALIDATIONS)]
    return node


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    return structural(model.model_json_schema(by_alias=True, mode="validation"))


def _status_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model_schema(model)
    # Status is written by the operator and the launcher; keep it open so an older CRD never prunes a newer
    # operator's fields.
    schema["x-kubernetes-preserve-unknown-fields"] = True
    return schema


def finetunejob_crd() -> dict[str, Any]:
    spec = model_schema(ftj.FineTuneJobSpec)
    spec["description"] = "What to train, on what, and where to keep the results."
    _rules_last(spec)
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
    _rules_last(spec)
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
                            "x-kubernetes-validations": [NAME_RULE.schema()],
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
