"""What the pinned vLLM release's `vllm serve` parser accepts (scripts/vllm_args.py, through tests/vllm.py).

Needs the vllm venv (`make vllm-venv`: vLLM and PyTorch, about 8 GB); skipped without it. Point
KUBETUNE_VLLM_PYTHON at another interpreter with vLLM 0.32 (`make vllm-venv`). These tests pin down
the facts the ModelServe renderer relies on; when vLLM is bumped, a failure here says which one changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.vllm import parse_vllm_args, require_vllm

MODEL = "/data/models/Qwen2.5-7B-Instruct"
ADAPTER = "clue-ner-lora-sft=data/experiment/Qwen2.5-7B-Instruct-lora-sft"

# reference/llamafactory-configs/vllm-serve-lora.sh, as arguments to `vllm serve` (the model positional),
# without --disable-log-requests (see "reference-disable-log-requests" below).
REFERENCE = [
    MODEL,
    "--host", "0.0.0.0",
    "--port", "8000",
    "--served-model-name", "Qwen2.5-7B-Instruct",
    "--enable-lora",
    "--gpu-memory-utilization", "0.8",
    "--max-model-len", "1024",
    "--lora-modules", ADAPTER,
]  # fmt: skip


ALLOWED_RANKS = "1, 8, 16, 32, 64, 128, 256, 320, 512"

ENGINE = [
    MODEL,
    "--tensor-parallel-size", "2",
    "--max-model-len", "4096",
    "--gpu-memory-utilization", "0.9",
    "--dtype", "bfloat16",
    "--enable-lora",
    "--max-lora-rank", "64",
    "--max-loras", "4",
    "--max-cpu-loras", "8",
    "--uvicorn-log-level", "warning",
    "--enable-prefix-caching",
]  # fmt: skip


@dataclass(frozen=True)
class Case:
    id: str
    argv: list[str]
    ok: bool
    args: dict[str, Any] = field(default_factory=dict)  # expected parsed values (a subset)
    error: str = ""  # expected in the error message
    warning: str = ""  # expected in one of the warnings


CASES = [
    Case(
        "reference",
        REFERENCE,
        ok=True,
        args={
            "model": MODEL,
            "host": "0.0.0.0",
            "port": 8000,
            "served_model_name": ["Qwen2.5-7B-Instruct"],
            "enable_lora": True,
            "gpu_memory_utilization": 0.8,
            "max_model_len": 1024,
            "lora_modules": [
                {
                    "name": "clue-ner-lora-sft",
                    "path": "data/experiment/Qwen2.5-7B-Instruct-lora-sft",
                    "base_model_name": None,
                    "is_3d_lora_weight": False,
                }
            ],
            # vLLM's defaults, which the renderer overrides when the adapters need more.
            "max_lora_rank": 16,
            "max_loras": 1,
            "max_cpu_loras": None,
            "tensor_parallel_size": 1,
            "dtype": "auto",
        },
    ),
    # The reference script's --disable-log-requests is gone from 0.32.0: request logging is off by default
    # and switched with --enable-log-requests / --no-enable-log-requests.
    Case(
        "reference-disable-log-requests",
        [*REFERENCE, "--disable-log-requests"],
        ok=False,
        error="unrecognized arguments: --disable-log-requests",
    ),
    Case("no-enable-log-requests", [MODEL, "--no-enable-log-requests"], ok=True),
    Case("whole-command-line", ["vllm", "serve", *REFERENCE], ok=True, args={"model": MODEL}),
    Case(
        "max-lora-rank-64",
        [MODEL, "--enable-lora", "--max-lora-rank", "64"],
        ok=True,
        args={"max_lora_rank": 64},
    ),
    Case("max-lora-rank-320", [MODEL, "--max-lora-rank", "320"], ok=True, args={"max_lora_rank": 320}),
    # The ranks vLLM accepts: vllm/config/lora.py MaxLoRARanks.
    Case(
        "max-lora-rank-1024",
        [MODEL, "--enable-lora", "--max-lora-rank", "1024"],
        ok=False,
        error="argument --max-lora-rank: invalid choice: 1024 (choose from " + ALLOWED_RANKS + ")",
    ),
    Case("max-lora-rank-2", [MODEL, "--max-lora-rank", "2"], ok=False, error="invalid choice: 2"),
    Case("unknown-flag", [MODEL, "--no-such-flag", "3"], ok=False, error="--no-such-flag"),
    Case(
        "engine",
        ENGINE,
        ok=True,
        args={
            "tensor_parallel_size": 2,
            "max_model_len": 4096,
            "gpu_memory_utilization": 0.9,
            "dtype": "bfloat16",
            "max_lora_rank": 64,
            "max_loras": 4,
            "max_cpu_loras": 8,
        },
    ),
    Case("tp-short", [MODEL, "-tp", "4"], ok=True, args={"tensor_parallel_size": 4}),
    Case(
        "dtype-refused", [MODEL, "--dtype", "fp8"], ok=False, error="argument --dtype: invalid choice: 'fp8'"
    ),
    Case(
        "uvicorn-log-level-refused",
        [MODEL, "--uvicorn-log-level", "verbose"],
        ok=False,
        error="argument --uvicorn-log-level: invalid choice",
    ),
    # Several adapters: one --lora-modules followed by all of them (name=path, or JSON with base_model_name).
    Case(
        "lora-modules-several",
        [
            MODEL,
            "--enable-lora",
            "--lora-modules",
            "a=/mnt/a",
            '{"name": "b", "path": "/mnt/b", "base_model_name": "q"}',
        ],
        ok=True,
        args={
            "lora_modules": [
                {"name": "a", "path": "/mnt/a", "base_model_name": None, "is_3d_lora_weight": False},
                {"name": "b", "path": "/mnt/b", "base_model_name": "q", "is_3d_lora_weight": False},
            ]
        },
    ),
    # A repeated --lora-modules flag does not add: the last one wins (vLLM only warns).
    Case(
        "lora-modules-repeated-flag",
        [MODEL, "--enable-lora", "--lora-modules", "a=/mnt/a", "--lora-modules", "b=/mnt/b"],
        ok=True,
        args={
            "lora_modules": [
                {"name": "b", "path": "/mnt/b", "base_model_name": None, "is_3d_lora_weight": False}
            ]
        },
        warning="duplicate keys --lora-modules",
    ),
    # name=path only without a comma; anything else is read as one JSON object (not a JSON list).
    Case(
        "lora-modules-comma", [MODEL, "--lora-modules", "a=/mnt/a,b"], ok=False, error="Invalid JSON format"
    ),
    Case(
        "lora-modules-json-list",
        [MODEL, "--lora-modules", '[{"name": "a", "path": "/mnt/a"}]'],
        ok=False,
        error="Invalid fields for --lora-modules",
    ),
    Case(
        "served-model-name-several",
        [MODEL, "--served-model-name", "qwen", "qwen2.5-7b"],
        ok=True,
        args={"served_model_name": ["qwen", "qwen2.5-7b"]},
    ),
    Case(
        "model-not-positional",
        ["--served-model-name", "qwen", "--model", MODEL],
        ok=True,
        args={"model": MODEL},
        warning="positional argument",
    ),
    Case(
        "no-model-with-served-name",
        ["--served-model-name", "qwen"],
        ok=False,
        error="`model` should be provided as the first positional argument",
    ),
]


@pytest.fixture(scope="module")
def answers() -> dict[str, dict[str, Any]]:
    require_vllm()
    return dict(zip([c.id for c in CASES], parse_vllm_args([c.argv for c in CASES]), strict=True))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_vllm_serve_parser(case: Case, answers: dict[str, dict[str, Any]]) -> None:
    answer = answers[case.id]
    assert answer["ok"] is case.ok, answer
    if case.ok:
        got = {name: answer["args"][name] for name in case.args}
        assert got == case.args
        assert answer["deprecated"] == []
        if case.warning:
            assert any(case.warning in w for w in answer["warnings"]), answer["warnings"]
    else:
        assert case.error in answer["error"]


def test_a_whole_batch_is_answered_in_order() -> None:
    require_vllm()
    ranks = [int(r) for r in ALLOWED_RANKS.split(", ")]
    answers = parse_vllm_args([[MODEL, "--max-lora-rank", str(r)] for r in ranks])
    assert [a["args"]["max_lora_rank"] for a in answers] == ranks


def test_takes_a_list_of_lists() -> None:
    with pytest.raises(TypeError):
        parse_vllm_args([MODEL, "--enable-lora"])  # type: ignore[list-item]
