"""Every pod of a FineTuneJob's attempt on this machine: one `kubetune launch` process per node rank.

Each rank is the Job's pod with its own completion index (NODE_RANK, as the kubelet fills it from the
annotation) and its own config mount, home and termination log; all share the claim. MASTER_ADDR, the
Service's DNS name of pod 0, is this machine, as cluster DNS would resolve it. The rendezvous port is the
installation's setting (a free port here, so that two runs on one machine never meet).
"""

from __future__ import annotations

import re
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune.api.defaults import TrainerSettings
from tests.worker.pod import TrainerPod, materialise


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Rank:
    pod: TrainerPod
    log: Path
    process: subprocess.Popen | None = None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Attempt:
    ranks: list[Rank]

    @property
    def leader(self) -> Rank:
        return self.ranks[0]

    def start(self) -> Attempt:
        for rank in self.ranks:
            rank.process = rank.pod.start(rank.log)
        return self

    def ended(self) -> bool:
        """Whether any pod has ended."""
        return any(rank.process is not None and rank.process.poll() is not None for rank in self.ranks)

    def wait(self, timeout: float = 900) -> list[int]:
        return [rank.process.wait(timeout=timeout) for rank in self.ranks if rank.process is not None]

    def run(self, timeout: float = 900) -> list[int]:
        return self.start().wait(timeout)

    def logs(self, chars: int = 4000) -> str:
        return "\n".join(f"--- node rank {i} ---\n{r.text()[-chars:]}" for i, r in enumerate(self.ranks))


def attempt(
    body: dict[str, Any],
    *,
    claim: Path,
    workdir: Path,
    attempt: int = 1,
    port: int | None = None,
    namespace: str = "team-a",
    uid: str = "00000000-0000-0000-0000-0000000000d1",
    **pod: Any,
) -> Attempt:
    """The pods of one attempt, one per node (`spec.resources.nodes`), not started yet."""
    settings = TrainerSettings(master_port=port or free_port())
    ranks = []
    for node_rank in range(body["spec"]["resources"]["nodes"]):
        home = workdir / f"a{attempt}-r{node_rank}"
        trainer = materialise(
            body, namespace=namespace, uid=uid, claim=claim, workdir=home, attempt=attempt,
            node_rank=node_rank, settings=settings, **pod,
        )  # fmt: skip
        ranks.append(Rank(trainer, home / "pod.log"))
    return Attempt(ranks)


_PROCESS_RANK = re.compile(r"Process rank: (\d+), world size: (\d+)")


def process_ranks(log: str) -> set[tuple[int, int]]:
    """(global rank, world size) of each training process that LLaMA-Factory's log says started."""
    return {(int(r), int(w)) for r, w in _PROCESS_RANK.findall(log)}
