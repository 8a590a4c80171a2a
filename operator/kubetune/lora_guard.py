"""vLLM's adapter management endpoints, for the pod's adapter-sync sidecar alone.

`VLLM_ALLOW_RUNTIME_LORA_UPDATING` opens `/v1/load_lora_adapter` and `/v1/unload_lora_adapter` (and the
same handlers at `/adapters`, the SageMaker standard's paths) on the port every client uses: anyone who
reaches the Service could unload a production adapter, or load other weights under its name. vLLM has no
option that guards those paths alone (`--api-key` guards all of /v1, so every client would need the key),
but it takes ASGI middleware (`vllm serve --middleware module.Class`). This is that middleware: a request
to any of those paths is refused (403) unless it carries the pod's adapter token in TOKEN_HEADER. The
sidecar writes the token at start into a memory-backed emptyDir that only it and the vLLM container
mount; this reads it from there (TOKEN_FILE_ENV names the file) on each such request, so a restarted
sidecar's token is taken at once. No token file, no loads: it fails closed. Any other request passes
through untouched, after one string comparison.

Standard library only, and no import of kubetune: vLLM runs in its own image, where this file is mounted
from a ConfigMap (render/modelserve.py) as the module `kubetune_lora_guard` on PYTHONPATH.
"""

from __future__ import annotations

import hmac
import json
import os
from typing import Any

TOKEN_HEADER = "X-Kubetune-Adapter-Token"
TOKEN_FILE_ENV = "KUBETUNE_ADAPTER_TOKEN_FILE"
# vLLM's two endpoints, and the same handlers as the SageMaker standard mounts them (vLLM registers its
# load and unload with `model_hosting_container_standards`: `POST /adapters`, `DELETE /adapters/{name}`).
GUARDED = frozenset({"load_lora_adapter", "unload_lora_adapter", "adapters"})

_HEADER = TOKEN_HEADER.lower().encode()  # ASGI gives header names in lower case
_REFUSAL = json.dumps(
    {
        "error": {
            "message": "adapters are loaded and unloaded by the ModelServe's adapter-sync sidecar only: "
            "edit spec.adapters",
            "type": "Forbidden",
            "param": None,
            "code": 403,
        }
    }
).encode()


def guarded(path: str) -> bool:
    """Whether a request path may reach a management endpoint, whatever prefix (--root-path), trailing
    slash or letter case it has: any path with one of those names as a segment (no client's path has)."""
    return not GUARDED.isdisjoint(path.lower().split("/"))


class LoraGuard:
    """ASGI middleware: `vllm serve --middleware kubetune_lora_guard.LoraGuard` (vLLM adds a class with
    `app.add_middleware`)."""

    def __init__(self, app: Any, token_file: str | None = None) -> None:
        self.app = app
        self.token_file = token_file or os.environ.get(TOKEN_FILE_ENV)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and guarded(scope.get("path", "")) and not self.allowed(scope):
            await send(
                {
                    "type": "http.response.start",
                    "status": 403,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(_REFUSAL)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": _REFUSAL})
            return
        await self.app(scope, receive, send)

    def expected(self) -> bytes | None:
        if not self.token_file:
            return None
        try:
            with open(self.token_file, "rb") as f:
                token = f.read().strip()
        except OSError:
            return None
        return token or None

    def allowed(self, scope: dict[str, Any]) -> bool:
        expected = self.expected()
        if expected is None:
            return False
        given = [value for name, value in scope.get("headers") or () if name == _HEADER]
        # One header, equal in constant time: its length and content tell an attacker nothing.
        return len(given) == 1 and hmac.compare_digest(given[0].strip(), expected)
