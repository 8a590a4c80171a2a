"""The demo's entity-extraction task as a client asks it: the held-out sentences, the chat messages the
adapter was trained on (LLaMA-Factory's alpaca format joins instruction and input with a newline, after the
record's system prompt), and whether an answer is the trained JSON (a list of {"label", "text"}).

Shared by `make demo` and the serve test on the real model. The model itself: scripts/real_model.py.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "examples" / "demo" / "data"
TRAIN, HELDOUT = DATA / "entities-train.json", DATA / "entities-heldout.json"
LABELS = {"person", "organisation", "place"}
MODEL_DIR_NAME = "smollm2-135m-instruct"  # under models/ on the claim, and in the cache


def real_model_dir() -> Path:
    """Where `make real-model` (scripts/real_model.py) prepares SmolLM2-135M-Instruct."""
    cache = Path(os.environ.get("KUBETUNE_CACHE", Path.home() / ".cache" / "kubetune"))
    return cache / "models" / MODEL_DIR_NAME


def place_model(claim: Path) -> Path:
    """The prepared model at models/ on the claim (hard links where it can: 540 MB that nothing writes)."""
    dest = claim / "models" / MODEL_DIR_NAME
    dest.mkdir(parents=True, exist_ok=True)
    for source in real_model_dir().iterdir():
        target = dest / source.name
        if target.exists() and target.stat().st_ino == source.stat().st_ino:
            continue
        target.unlink(missing_ok=True)
        try:
            os.link(source, target)
        except OSError:  # another filesystem
            shutil.copyfile(source, target)
    for target in dest.iterdir():
        # Readable by the images' users (the trainer's uid 1000, vLLM's): safetensors writes its file 0600.
        target.chmod(target.stat().st_mode | 0o444)
    return dest


def heldout() -> list[dict[str, str]]:
    return json.loads(HELDOUT.read_text())


def messages(record: dict[str, str]) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": record["system"]},
        {"role": "user", "content": f"{record['instruction']}\n{record['input']}"},
    ]


def entities(answer: str) -> list[dict[str, str]] | None:
    """The answer's entities when it is the trained format, else None."""
    try:
        value = json.loads(answer.strip())
    except ValueError:
        return None
    if not isinstance(value, list) or not all(
        isinstance(e, dict)
        and set(e) == {"label", "text"}
        and e["label"] in LABELS
        and isinstance(e["text"], str)
        for e in value
    ):
        return None
    return value


def ask(pod: Any, model: str, record: dict[str, str], max_tokens: int = 80) -> str:
    """The greedy answer of `model` (the base's served name, or an adapter's) on the pod's OpenAI API."""
    code, body = pod.request(
        "POST",
        "/v1/chat/completions",
        {"model": model, "messages": messages(record), "max_tokens": max_tokens, "temperature": 0},
    )
    assert code == 200, f"{model}: {code} {body}"
    return body["choices"][0]["message"]["content"]
