"""A de-duplicating keyed work queue: client-go's (and controller-runtime's) workqueue contract, small.

- A key waits at most once, however often it is added while it waits.
- A key is never handed to two workers at once: added while a worker holds it, it waits until `done`.
- A key whose reconcile failed comes back after an exponential backoff, capped (`retry`); `forget` resets it.
- `add_after` brings a key back later (a periodic resync, a retry's backoff).
- `again` is the look a reconcile asks for (a deadline, a state nobody reports): it replaces the one the
  key's previous reconcile asked for, which is stale once a later reconcile has decided from the whole
  state again (a look for pods that have started since). An entry that stands for a change as well (an
  addition that came while it was due first) is never taken back.
- Keys are served first in, first out: a burst of events for one resource is one entry, and cannot starve
  the others. A key added `soon` (its resource's children changed: a pod started, a Job ended) goes before
  those that are not (a new resource, a resync): what users watch follows their pods at once, while a
  burst of new resources waits a moment longer. Never longer than `SOON_RUN` soon keys in a row, though:
  then one of the others goes, so that a steady stream of pod events cannot starve a new resource, a
  resync or an expired TTL.

A key whose children changed may be added `batched`: soon, but a short period after the first such change
(as the Job controller batches its pods' events), so that a burst of them (a pod created, bound, started,
and its Job counting it) is one reconcile, not four. A key waiting already sees them when it runs. A key
added soon at once (a change users wait for: a pod started or ended) goes now, and its batched addition
still to come goes with it: the reconcile it queues sees that change too.

A key may carry `full`: the next reconcile of it should also re-check what it normally takes from caches
(a periodic resync asks for that). The flag of a key added twice is the OR of both.

Each addition may say its `cause`; the key's reconcile is told the cause of the addition that queued it
(later ones join it), or WHILE_HELD when it changed while a worker held it, or RETRY after a failure.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, NamedTuple, TypeVar

K = TypeVar("K", bound=Hashable)
SOON_RUN = 8  # soon keys served in a row at most while others wait
WHILE_HELD, RETRY = "while held", "retry"


class Item(NamedTuple, Generic[K]):
    key: K
    full: bool
    waited: float  # seconds since the key was queued
    cause: str = ""  # what queued it (the module's docstring)


class WorkQueue(Generic[K]):
    def __init__(
        self,
        base_delay: float = 0.05,
        max_delay: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.base_delay, self.max_delay = base_delay, max_delay
        self._clock = clock
        self._lock = threading.Condition()
        self._order: deque[K] = deque()  # keys waiting, in order (entries of keys served since: skipped)
        self._soon: deque[K] = deque()  # keys added `soon`, served before _order
        self._in_soon: set[K] = set()
        self._dirty_soon: set[K] = set()
        self._waiting: dict[K, bool] = {}  # key -> full, for every key in _order
        self._since: dict[K, float] = {}  # key -> when it was queued
        self._cause: dict[K, str] = {}  # key -> what queued it
        self._processing: set[K] = set()
        self._dirty: dict[K, bool] = {}  # added while processing: queued again by done()
        self._failures: dict[K, int] = {}
        # (when, tie-break, key, full, soon, cause)
        self._later: list[tuple[float, int, K, bool, bool, str]] = []
        self._due: dict[K, float] = {}  # key -> its earliest time in _later (later entries are spent)
        self._batched: set[K] = set()  # keys whose earliest entry in _later is a batched addition
        self._asked: dict[K, float] = {}  # key -> its earliest entry in _later, when only `again` made it
        self._ticket = itertools.count()
        self._shut = False
        self._soon_in_a_row = 0

    def add(self, key: K, full: bool = False, soon: bool = False, cause: str = "") -> None:
        with self._lock:
            if not self._shut:
                if soon and key in self._batched:  # the reconcile queued now sees that change too
                    self._batched.discard(key)
                    self._due.pop(key, None)  # its entry in _later is spent
                self._add_locked(key, full, soon, cause)

    def _add_locked(self, key: K, full: bool, soon: bool, cause: str) -> None:
        if key in self._processing:
            self._dirty[key] = self._dirty.get(key, False) or full
            if soon:
                self._dirty_soon.add(key)
        elif key in self._waiting:
            self._waiting[key] = self._waiting[key] or full
            if soon:
                self._enqueue(key, soon=True)
        else:
            self._waiting[key] = full
            self._since[key] = self._clock()
            self._cause[key] = cause
            self._enqueue(key, soon)
            self._lock.notify()

    def _enqueue(self, key: K, soon: bool) -> None:
        if not soon:
            self._order.append(key)
        elif key not in self._in_soon:
            self._soon.append(key)
            self._in_soon.add(key)

    def add_after(self, key: K, delay: float, full: bool = False, cause: str = "") -> None:
        if delay <= 0:
            self.add(key, full, cause=cause)
            return
        with self._lock:
            if not self._shut:
                self._later_locked(key, delay, full, soon=False, cause=cause)

    def add_batched(self, key: K, period: float, cause: str = "") -> None:
        """Soon, `period` after the first of a burst of additions (see the module's docstring)."""
        if period <= 0:
            self.add(key, soon=True, cause=cause)
            return
        with self._lock:
            if self._shut:
                return
            if key in self._waiting:  # its reconcile has not started: it reads what changed
                self._enqueue(key, soon=True)
                return
            if self._later_locked(key, period, full=False, soon=True, cause=cause):
                self._batched.add(key)

    def again(self, key: K, delay: float | None, cause: str = "") -> None:
        """The look again the key's latest reconcile asked for (None: none), in place of the one its
        previous reconcile asked for (the module's docstring)."""
        with self._lock:
            if self._shut:
                return
            asked = self._asked.pop(key, None)
            if asked is not None and self._due.get(key) == asked:
                del self._due[key]  # its entry in _later is spent
            if delay is None:
                return
            if delay <= 0:
                self._add_locked(key, False, False, cause)
            elif self._later_locked(key, delay, full=False, soon=False, cause=cause, asked=True):
                self._asked[key] = self._due[key]

    def _later_locked(
        self, key: K, delay: float, full: bool, soon: bool, cause: str, asked: bool = False
    ) -> bool:
        """Whether this entry is now the key's earliest."""
        if not asked:
            self._asked.pop(key, None)  # the key's earliest entry now stands for this addition too
        when = self._clock() + delay
        if key in self._due and self._due[key] <= when and not full:
            return False  # it comes back sooner already
        earliest = key not in self._due or when < self._due[key]
        if earliest:
            self._due[key] = when
            self._batched.discard(key)
        heapq.heappush(self._later, (when, next(self._ticket), key, full, soon, cause))
        self._lock.notify()
        return earliest

    def retry(self, key: K) -> float:
        """The key's reconcile failed: it comes back after base * 2^failures, at most max (returned)."""
        with self._lock:
            failures = self._failures.get(key, 0)
            self._failures[key] = failures + 1
        delay = min(self.base_delay * 2**failures, self.max_delay)
        self.add_after(key, delay, cause=RETRY)
        return delay

    def forget(self, key: K) -> None:
        """The key's reconcile succeeded: its next failure starts the backoff from the beginning."""
        with self._lock:
            self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        with self._lock:
            return self._failures.get(key, 0)

    def get(self, timeout: float | None = None) -> Item[K] | None:
        """The next key, now held by the caller until `done`; None on timeout or shutdown."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._lock:
            while True:
                self._release_due()
                key = self._next()
                if key is not None:
                    full = self._waiting.pop(key)
                    waited = self._clock() - self._since.pop(key)
                    self._processing.add(key)
                    return Item(key, full, waited, self._cause.pop(key))
                if self._shut:
                    return None
                wait = None if deadline is None else deadline - self._clock()
                if self._later:
                    until_due = self._later[0][0] - self._clock()
                    wait = until_due if wait is None else min(wait, until_due)
                if wait is not None and wait <= 0:
                    if deadline is not None and self._clock() >= deadline:
                        return None
                    continue
                self._lock.wait(wait)

    def _next(self) -> K | None:
        if self._soon_in_a_row >= SOON_RUN:
            key = self._next_in_order()
            if key is not None:
                self._soon_in_a_row = 0
                return key
        while self._soon:
            key = self._soon.popleft()
            self._in_soon.discard(key)
            if key in self._waiting:
                self._soon_in_a_row += 1
                return key
        self._soon_in_a_row = 0
        return self._next_in_order()

    def _next_in_order(self) -> K | None:
        while self._order:
            key = self._order.popleft()
            if key in self._waiting:  # else: served from the soon lane already
                return key
        return None

    def done(self, key: K) -> None:
        with self._lock:
            self._processing.discard(key)
            if key in self._dirty:
                full = self._dirty.pop(key)
                soon = key in self._dirty_soon
                self._dirty_soon.discard(key)
                if not self._shut:  # while held, every add went to _dirty: the key is not waiting
                    self._add_locked(key, full, soon, WHILE_HELD)

    def shutdown(self) -> None:
        with self._lock:
            self._shut = True
            self._lock.notify_all()

    def __len__(self) -> int:
        """Keys waiting now (not those held by workers, nor those due later)."""
        with self._lock:
            return len(self._waiting)

    def _release_due(self) -> None:
        now = self._clock()
        while self._later and self._later[0][0] <= now:
            when, _, key, full, soon, cause = heapq.heappop(self._later)
            if self._due.get(key) == when:
                del self._due[key]
                self._batched.discard(key)
                self._asked.pop(key, None)
            elif not full:
                continue  # a sooner entry of the key was released already
            self._add_locked(key, full, soon, cause)
