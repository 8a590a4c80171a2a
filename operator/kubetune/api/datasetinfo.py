"""The shape of `dataset_info.json` entries, as LLaMA-Factory reads them: checked before the operator renders
them (inline in `spec.dataset.info`, or read from the ConfigMap that `spec.dataset.configMapRef` names)."""

from __future__ import annotations

from typing import Any


def dataset_info_problems(info: Any, where: str) -> list[str]:
    """What is wrong with dataset_info.json content: it must be an object of entries that are objects
    (`file_name`, `hf_hub_url`, ... strings; `columns`, `tags` objects). `where` names its source."""
    if not isinstance(info, dict):
        return [f"{where}: dataset_info.json must be a JSON object of entries, got {_json_type(info)}"]
    problems = []
    for name, entry in info.items():
        if not isinstance(entry, dict):
            problems.append(f"{where}: entry {name!r} must be a JSON object, got {_json_type(entry)}")
            continue
        for key in ("file_name", "hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "formatting"):
            if key in entry and not isinstance(entry[key], str):
                problems.append(f"{where}: {name}.{key} must be a string, got {_json_type(entry[key])}")
        for key in ("columns", "tags"):
            if key in entry and not isinstance(entry[key], dict):
                problems.append(f"{where}: {name}.{key} must be a JSON object, got {_json_type(entry[key])}")
    return problems


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array"}.get(
        type(value), type(value).__name__
    )
