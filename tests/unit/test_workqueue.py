"""The work queue's contract, rule by rule (runtime/workqueue.py): the rules controller-runtime's keep."""

from __future__ import annotations

import threading
import time

import pytest

from kubetune.runtime.workqueue import WHILE_HELD, WorkQueue


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queue(clock: Clock) -> WorkQueue[str]:
    return WorkQueue(base_delay=1.0, max_delay=8.0, clock=clock)


def drain(queue: WorkQueue[str]) -> list[str]:
    out = []
    while (item := queue.get(timeout=0)) is not None:
        out.append(item.key)
        queue.done(item.key)
    return out


def test_a_key_added_many_times_while_it_waits_is_handed_out_once(queue: WorkQueue[str]) -> None:
    for _ in range(100):
        queue.add("a")
    queue.add("b")
    assert len(queue) == 2
    assert drain(queue) == ["a", "b"]


def test_keys_come_out_first_in_first_out(queue: WorkQueue[str]) -> None:
    for key in ("c", "a", "b", "a", "c"):
        queue.add(key)
    assert drain(queue) == ["c", "a", "b"]


def test_a_key_held_by_a_worker_is_not_handed_to_another(queue: WorkQueue[str]) -> None:
    queue.add("a")
    held = queue.get(timeout=0)
    assert held is not None and held.key == "a"
    queue.add("a")  # an event while it is reconciled
    assert queue.get(timeout=0) is None, "the same key went to a second worker"
    queue.done("a")
    again = queue.get(timeout=0)
    assert again is not None and again.key == "a", "the event during the reconcile was lost"


def test_a_key_added_while_held_comes_back_once_however_many_events(queue: WorkQueue[str]) -> None:
    queue.add("a")
    queue.get(timeout=0)
    for _ in range(10):
        queue.add("a")
    queue.done("a")
    assert drain(queue) == ["a"]


def test_full_is_kept_when_a_key_is_added_again(queue: WorkQueue[str]) -> None:
    queue.add("a", full=True)
    queue.add("a")
    item = queue.get(timeout=0)
    assert item is not None and item.full
    queue.add("a")
    queue.add("a", full=True)  # while held
    queue.done("a")
    item = queue.get(timeout=0)
    assert item is not None and item.full


def test_failures_back_off_exponentially_up_to_the_cap(queue: WorkQueue[str], clock: Clock) -> None:
    delays = []
    for _ in range(6):
        queue.add("a")
        item = queue.get(timeout=0)
        assert item is not None
        delays.append(queue.retry("a"))
        queue.done("a")
        assert queue.get(timeout=0) is None, "a failed key came back before its backoff"
        clock.now += delays[-1]
        assert drain(queue) == ["a"]
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_forget_starts_the_backoff_again(queue: WorkQueue[str]) -> None:
    assert queue.retry("a") == 1.0
    assert queue.retry("a") == 2.0
    queue.forget("a")
    assert queue.failures("a") == 0
    assert queue.retry("a") == 1.0


def test_add_after_waits_and_keeps_only_the_soonest(queue: WorkQueue[str], clock: Clock) -> None:
    queue.add_after("a", 10)
    queue.add_after("a", 5)
    queue.add_after("a", 30)
    assert queue.get(timeout=0) is None
    clock.now = 5
    assert drain(queue) == ["a"]
    clock.now = 10
    assert drain(queue) == [], "a spent, later entry of the key fired again"
    clock.now = 31
    assert drain(queue) == []


def test_a_reconciles_look_again_replaces_the_one_its_previous_reconcile_asked_for(
    queue: WorkQueue[str], clock: Clock
) -> None:
    """A first reconcile asks to look again in 2 s (its pods have not started); its pod starts at 1 s, and
    that reconcile asks for nothing: no third reconcile at 2 s."""
    queue.add("job")
    assert drain_asking(queue, 2.0) == ["job"]
    clock.now = 1
    queue.add("job", soon=True)
    assert drain_asking(queue, None) == ["job"]
    clock.now = 3
    assert drain(queue) == []
    queue.again("job", 5)
    queue.again("job", 10)  # asked again: the later look replaces the sooner one
    clock.now = 9
    assert drain(queue) == []
    clock.now = 13
    assert drain(queue) == ["job"]


def test_a_look_again_that_stands_for_a_change_too_is_kept(queue: WorkQueue[str], clock: Clock) -> None:
    """A change while the key is held that comes after the look it asked for rides on that look: a later
    reconcile that asks for nothing does not take it back."""
    queue.again("job", 1)
    queue.add("job")
    held = queue.get(timeout=0)
    assert held is not None
    queue.add_batched("job", 5)  # comes back at 1 with the look already due then
    queue.again("job", None)
    queue.done("job")
    clock.now = 1
    assert drain(queue) == ["job"]


def drain_asking(queue: WorkQueue[str], delay: float | None) -> list[str]:
    """`drain`, each key's reconcile asking to look again after `delay` (as the controller's workers do)."""
    out = []
    while (item := queue.get(timeout=0)) is not None:
        out.append(item.key)
        queue.again(item.key, delay)
        queue.done(item.key)
    return out


def test_a_delayed_key_that_is_waiting_already_is_not_doubled(queue: WorkQueue[str], clock: Clock) -> None:
    queue.add("a")
    queue.add_after("a", 1)
    clock.now = 2
    assert drain(queue) == ["a"]


def test_the_wait_is_reported(queue: WorkQueue[str], clock: Clock) -> None:
    queue.add("a")
    clock.now = 3
    item = queue.get(timeout=0)
    assert item is not None and item.waited == 3


def test_shutdown_releases_waiting_workers() -> None:
    queue: WorkQueue[str] = WorkQueue()
    got: list[object] = []
    worker = threading.Thread(target=lambda: got.append(queue.get()))
    worker.start()
    queue.shutdown()
    worker.join(timeout=5)
    assert got == [None]


def test_many_workers_never_hold_one_key_at_once() -> None:
    queue: WorkQueue[int] = WorkQueue()
    holding: set[int] = set()
    guard = threading.Lock()
    clashes: list[int] = []
    handled = [0]

    def work() -> None:
        while (item := queue.get(timeout=0.5)) is not None:
            with guard:
                if item.key in holding:
                    clashes.append(item.key)
                holding.add(item.key)
                handled[0] += 1
                again = handled[0] < 400
            if again:
                queue.add(item.key)  # an event of this key while it is held: it must wait for `done`
            # The reconcile's work: other workers get and finish keys meanwhile, so that a key handed to
            # two workers at once is seen (with no work at all the window would be too short to catch).
            time.sleep(0.001)
            with guard:
                holding.discard(item.key)
            queue.done(item.key)

    workers = [threading.Thread(target=work) for _ in range(8)]
    for w in workers:
        w.start()
    for round_ in range(200):
        for key in range(2):  # few keys, many workers: each key is wanted by several at once
            queue.add(key)
        if round_ % 50 == 0:
            threading.Event().wait(0.01)
    for w in workers:
        w.join(timeout=30)
    assert not clashes
    assert drain(queue) == []  # type: ignore[arg-type]
    assert handled[0] >= 400


def test_keys_added_soon_go_before_the_others_once_each(queue: WorkQueue[str]) -> None:
    for key in ("new-1", "new-2", "new-3"):
        queue.add(key)
    queue.add("running", soon=True)
    queue.add("new-2", soon=True)  # waiting already: moves ahead, still once
    assert drain(queue) == ["running", "new-2", "new-1", "new-3"]


def test_a_key_added_soon_while_held_comes_back_ahead(queue: WorkQueue[str]) -> None:
    queue.add("a")
    queue.add("b")
    held = queue.get(timeout=0)
    assert held is not None and held.key == "a"
    queue.add("a", soon=True)
    queue.done("a")
    assert drain(queue) == ["a", "b"]


def test_a_stream_of_soon_keys_cannot_starve_the_others(queue: WorkQueue[str]) -> None:
    """Pods of running jobs change all the time: a new resource (or a resync, an expired TTL) still gets
    its turn after at most SOON_RUN of them."""
    from kubetune.runtime.workqueue import SOON_RUN

    queue.add("new-resource")
    served = []
    for index in range(5 * SOON_RUN):
        queue.add(f"pods-changed-{index}", soon=True)
        queue.add(f"pods-changed-{index}-b", soon=True)
        item = queue.get(timeout=0)
        assert item is not None
        served.append(item.key)
        queue.done(item.key)
        if item.key == "new-resource":
            break
    assert "new-resource" in served
    assert served.index("new-resource") == SOON_RUN


def test_a_burst_of_batched_additions_is_one_entry_a_period_after_the_first(
    queue: WorkQueue[str], clock: Clock
) -> None:
    """A pod created, bound and started, and its Job counting it: one reconcile, ahead of new resources."""
    queue.add("new-resource")
    queue.add_batched("job", 0.5)
    clock.now = 0.3
    queue.add_batched("job", 0.5)  # within the period: no later entry
    assert drain(queue) == ["new-resource"]
    clock.now = 0.5
    queue.add("another-new-resource")
    assert drain(queue) == ["job", "another-new-resource"]
    clock.now = 0.9
    queue.add_batched("job", 0.5)  # a change after that reconcile: another period
    assert drain(queue) == []
    clock.now = 1.4
    assert drain(queue) == ["job"]


def test_a_key_added_soon_at_once_takes_its_batched_addition_with_it(
    queue: WorkQueue[str], clock: Clock
) -> None:
    """A pod created (batched), then started (at once): one reconcile, now, that sees both."""
    queue.add("new-resource")
    queue.add_batched("job", 0.5)
    clock.now = 0.2
    queue.add("job", soon=True)
    assert drain(queue) == ["job", "new-resource"]
    clock.now = 1
    assert drain(queue) == []


def test_a_key_added_soon_at_once_keeps_a_later_look_it_asked_for(
    queue: WorkQueue[str], clock: Clock
) -> None:
    """Only a batched addition goes with it: a look the reconcile asked for later (a TTL) still comes."""
    queue.again("job", 5)
    queue.add("job", soon=True)
    assert drain(queue) == ["job"]
    clock.now = 5
    assert drain(queue) == ["job"]


def test_a_batched_addition_of_a_waiting_key_moves_it_ahead_and_adds_nothing(
    queue: WorkQueue[str], clock: Clock
) -> None:
    queue.add("new-1")
    queue.add("new-2")
    queue.add_batched("new-2", 0.5)  # its reconcile has not started: it reads the change
    assert drain(queue) == ["new-2", "new-1"]
    clock.now = 1
    assert drain(queue) == []


def test_a_batched_addition_of_a_held_key_comes_back_after_the_period(
    queue: WorkQueue[str], clock: Clock
) -> None:
    queue.add("job")
    held = queue.get(timeout=0)
    assert held is not None
    queue.add_batched("job", 0.5)  # its reconcile may have read the cache before the change
    queue.done("job")
    assert drain(queue) == []
    clock.now = 0.5
    assert drain(queue) == ["job"]


@pytest.mark.parametrize(
    ("additions", "cause"),
    [
        # The addition that queued the key names it; later ones join it.
        ([("add", "Pod"), ("add", "resync")], "Pod"),
        ([("batched", "Job"), ("add", "FineTuneJob")], "FineTuneJob"),  # the batched one is not due yet
        ([("after", "again")], "again"),
        ([("retry", "")], "retry"),
    ],
)
def test_a_key_handed_out_says_what_queued_it(
    queue: WorkQueue[str], clock: Clock, additions: list[tuple[str, str]], cause: str
) -> None:
    for how, said in additions:
        if how == "add":
            queue.add("a", cause=said)
        elif how == "batched":
            queue.add_batched("a", 0.5, cause=said)
        elif how == "after":
            queue.add_after("a", 2.0, cause=said)
        else:
            queue.retry("a")
    clock.now += 10
    item = queue.get(timeout=0)
    assert item is not None and item.cause == cause


def test_a_key_changed_while_held_comes_back_as_such(queue: WorkQueue[str]) -> None:
    queue.add("a", cause="FineTuneJob")
    item = queue.get(timeout=0)
    assert item is not None and item.cause == "FineTuneJob"
    queue.add("a", cause="Job")
    queue.done("a")
    again = queue.get(timeout=0)
    assert again is not None and again.cause == WHILE_HELD
