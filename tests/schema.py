"""Whether a status the operator computes fits the schema its CRD declares (the pydantic `*Status` models).

The API server prunes what a structural schema does not declare: a key computed but not declared would be
written and silently dropped. The reconcile tables check every status they reach against it.
"""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (itself, in a list, or optional), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def undeclared(value: dict[str, Any], model: type[BaseModel], where: str = "status") -> list[str]:
    """The paths in `value` that `model` does not declare, looked into nested models and lists of them."""
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    found = []
    for key, item in value.items():
        field = fields.get(key)
        if field is None:
            found.append(f"{where}.{key}")
            continue
        nested = _model_in(field.annotation)
        if nested is None:
            continue
        for index, element in enumerate(item if isinstance(item, list) else [item]):
            if isinstance(element, dict):
                found += undeclared(element, nested, f"{where}.{key}[{index}]")
    return found
