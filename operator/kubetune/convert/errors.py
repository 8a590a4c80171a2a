"""What a conversion gives: the manifests and the notes, or every problem at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class ConversionError(ValueError):
    """The config cannot be converted faithfully; `problems` says why, one message each."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass
class ConversionResult:
    manifest: dict[str, Any]
    """The FineTuneJob."""
    notes: list[str] = field(default_factory=list)
    before: list[dict[str, Any]] = field(default_factory=list)
    """Manifests the FineTuneJob needs, applied before it (a ConfigMap with a DeepSpeed JSON)."""

    @property
    def manifests(self) -> list[dict[str, Any]]:
        return [*self.before, self.manifest]
