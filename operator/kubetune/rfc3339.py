"""Kubernetes' time formats, in one place: `Time` (RFC 3339 to the second, in UTC, as in creationTimestamp
and the status's times) and `MicroTime` (to the microsecond, as in a Lease's renewTime)."""

from __future__ import annotations

from datetime import UTC, datetime

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
MICRO_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def now() -> str:
    """This moment as a `Time`."""
    return datetime.now(UTC).strftime(TIME_FORMAT)


def now_micro() -> str:
    """This moment as a `MicroTime`."""
    return datetime.now(UTC).strftime(MICRO_TIME_FORMAT)


def parse(value: str) -> datetime:
    """A `Time` -> an aware datetime in UTC."""
    return datetime.strptime(value, TIME_FORMAT).replace(tzinfo=UTC)
