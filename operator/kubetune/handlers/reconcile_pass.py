"""What both reconciles' passes share: the resource being reconciled, and the installation's settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubetune.api.defaults import TrainerSettings


@dataclass
class ResourcePass:
    body: dict[str, Any]
    settings: TrainerSettings

    @property
    def meta(self) -> dict[str, Any]:
        return self.body["metadata"]

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def namespace(self) -> str:
        return self.meta["namespace"]

    @property
    def uid(self) -> str:
        return self.meta["uid"]

    @property
    def previous(self) -> dict[str, Any]:
        """The status the last pass wrote."""
        return self.body.get("status") or {}
