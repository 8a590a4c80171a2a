"""Helpers for tests that talk to the local control plane."""

from __future__ import annotations

import time

import pytest


def wait_until(check, what: str, timeout: float = 60.0, interval: float = 0.25):
    """Polls `check` until it returns something truthy; fails the test with `what` otherwise."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last seen: {last!r})")
