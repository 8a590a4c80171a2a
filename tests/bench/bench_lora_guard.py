"""What the adapter management guard (kubetune/lora_guard.py) costs a client's request.

    python -m tests.bench.bench_lora_guard [--requests 300] [--json FILE] [--asgi-only]

Two measurements, neither a test (it asserts nothing):

- the middleware alone, in this process: the same request (`POST /v1/completions`) through a bare ASGI app
  and through LoraGuard in front of it, many times: nanoseconds added per request;
- the real engine (vLLM's CPU build, `make vllm-venv`): two `vllm serve` processes of the tiny model with
  the arguments and environment the operator renders for a CPU ModelServe, one without the `--middleware`
  pair and one as rendered, side by side, the requests alternating between them so that the noise of a
  shared machine falls on both alike: per-request latency of one-token completions and of `/v1/models`.
  `--control` runs both without the guard: what two equal servers differ by on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from kubetune import lora_guard
from kubetune.api.modelserve import ModelServeSpec
from kubetune.render import modelserve as render
from tests.serve.pod import ServePod, vllm_bin
from tests.worker.fixtures import SAMPLE_NER

REPO = Path(__file__).resolve().parents[2]


def asgi_overhead(calls: int) -> dict[str, float]:
    async def inner(scope: dict, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def noop(message: dict) -> None:
        pass

    scope = {"type": "http", "method": "POST", "path": "/v1/completions", "headers": [(b"a", b"b")] * 8}
    guarded = lora_guard.LoraGuard(inner, token_file="/nonexistent")

    async def run(app: Any) -> float:
        started = time.perf_counter()
        for _ in range(calls):
            await app(scope, None, noop)
        return (time.perf_counter() - started) / calls * 1e9

    async def both() -> tuple[float, float]:
        bare, with_guard = [], []
        for _ in range(5):  # interleaved rounds: the best of each
            bare.append(await run(inner))
            with_guard.append(await run(guarded))
        return min(bare), min(with_guard)

    bare, with_guard = asyncio.run(both())
    added = with_guard - bare
    return {"bare_ns": round(bare, 1), "guarded_ns": round(with_guard, 1), "added_ns": round(added, 1)}


def tiny_model(dest: Path) -> Path:
    """The tiny Qwen2 of the worker tier, built with the vLLM environment's transformers and tokenizers."""
    code = (
        "import sys; from pathlib import Path; from tests.worker.tinymodel import build_tiny_model; "
        "build_tiny_model(Path(sys.argv[1]), [Path(sys.argv[2])])"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run([str(vllm_bin() / "python"), "-c", code, str(dest), str(SAMPLE_NER)], check=True, env=env)
    return dest


def deployment(guarded: bool) -> dict[str, Any]:
    spec = ModelServeSpec.model_validate(
        {
            "model": {"source": "pvc://shared/models/tiny", "servedModelName": "tiny-base"},
            "storage": {"claim": "shared"},
            "replicas": 1,
            "resources": {"gpus": 0, "cpu": "2", "memory": "6Gi"},
            "engine": {"dtype": "float32", "maxModelLen": 256, "cpuKvCacheGib": 1},
        }
    )
    rendered = render.deployment(render.ModelServeTarget(name="tiny", namespace="bench", uid="u", spec=spec))
    if not guarded:
        vllm = rendered["spec"]["template"]["spec"]["containers"][0]
        at = vllm["args"].index("--middleware")
        del vllm["args"][at : at + 2]
    return rendered


def request(url: str, path: str, body: dict | None = None) -> float:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(req, timeout=120) as response:
        response.read()
        assert response.status == 200
    return time.perf_counter() - started


def wait_healthy(pod: ServePod, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pod.processes["vllm"].poll() is not None:
            raise SystemExit(f"vLLM exited:\n{pod.log_tail('vllm')}")
        try:
            request(pod.url, "/health")
            return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"vLLM not healthy after {timeout}s:\n{pod.log_tail('vllm')}")


def summary(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    return {
        "p50_ms": round(statistics.median(ms), 2),
        "p90_ms": round(ms[int(len(ms) * 0.9)], 2),
        "mean_ms": round(statistics.fmean(ms), 2),
        "per_second": round(1000 / statistics.fmean(ms), 1),
    }


def engine(requests: int, control: bool = False) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-lora-guard-"))
    claim = work / "claim"
    tiny_model(claim / "models" / "tiny")
    pods = {}
    # --control: both without the guard (an A/A run: how far two equal servers differ here).
    for name, guarded in (("without", False), ("with", not control)):
        pod = ServePod(deployment(guarded), f"tiny-{name}", "bench", claim, work / name)
        pod.mount_lora_guard({f"{render.LORA_GUARD_MODULE}.py": render.lora_guard_source()})
        pods[name] = pod
    try:
        for pod in pods.values():
            pod.start_vllm()
            (pod.token_dir / "token").write_text("bench-token")
        for pod in pods.values():
            wait_healthy(pod)
        completion = {"model": "tiny-base", "prompt": "The quick brown fox", "max_tokens": 1}
        out: dict[str, Any] = {}
        for label, path, body in (
            ("completions", "/v1/completions", completion),
            ("models", "/v1/models", None),
        ):
            for pod in pods.values():  # warm-up
                for _ in range(5):
                    request(pod.url, path, body)
            times: dict[str, list[float]] = {name: [] for name in pods}
            for i in range(requests):
                order = list(pods) if i % 2 == 0 else list(reversed(pods))
                for name in order:
                    times[name].append(request(pods[name].url, path, body))
            out[label] = {name: summary(t) for name, t in times.items()}
        refused = pods["with"].request("POST", "/v1/load_lora_adapter", {"lora_name": "x", "lora_path": "/x"})
        out["client_load_answer"] = refused[0]
        out["control"] = control
        return out
    finally:
        for pod in pods.values():
            pod.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--calls", type=int, default=200_000, help="ASGI calls per round")
    parser.add_argument("--asgi-only", action="store_true")
    parser.add_argument("--control", action="store_true", help="both engines without the guard (A/A)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    figures: dict[str, Any] = {"asgi": asgi_overhead(args.calls)}
    print(json.dumps(figures), flush=True)
    if not args.asgi_only:
        if not (vllm_bin() / "vllm").exists():
            print(f"no vLLM at {vllm_bin()}: run `make vllm-venv`", file=sys.stderr)
            return 1
        figures["engine"] = engine(args.requests, args.control)
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
