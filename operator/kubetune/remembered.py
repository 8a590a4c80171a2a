"""A bounded memory of keys: the newest `size` kept, the oldest forgotten first. Not safe across threads on
its own: its owner holds a lock around it."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Remembered(Generic[K]):
    def __init__(self, size: int):
        self.size = size
        self._keys: OrderedDict[K, None] = OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: K) -> None:
        """Remembers `key` as the newest (again, if it was); forgets the oldest beyond `size`."""
        self._keys[key] = None
        self._keys.move_to_end(key)
        while len(self._keys) > self.size:
            self._keys.popitem(last=False)
