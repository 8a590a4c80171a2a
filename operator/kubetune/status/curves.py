"""Loss curves: LLaMA-Factory's trainer log -> a bounded history; the over-fitting rule; the best checkpoint.

Pure functions, shared by three readers: the launcher builds `status.progress.history` from every record of
trainer_log.jsonl (thinned to at most HISTORY_LIMIT points), the operator reads that history back to decide
the `Overfitting` condition and the best checkpoint, and `kubetune plot` draws it.

A point is a dict in the status' camelCase: `step`, and what was logged at that step: `epoch`, `loss`
(training), `evalLoss`, `learningRate`, and `checkpoint: true` when a checkpoint of that step is on the claim.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kubetune.status.conditions import condition as make_condition
from kubetune.status.conditions import find as find_condition

HISTORY_LIMIT = 200
# At most this many of the points are evaluations, so that the training curve always keeps some points.
EVALUATION_LIMIT = 150
# The newest evaluations are never thinned: the over-fitting rule reads them.
RECENT_EVALUATIONS = 20

DEFAULT_PATIENCE = 3  # evaluations in a row above the best
DEFAULT_TOLERANCE = 0.01  # relative: a change smaller than 1% of the loss is noise

CONDITION = "Overfitting"

Point = dict[str, Any]


LOSS_DIGITS = 4  # significant digits of the loss shown in `kubectl get ftj` (status.progress)


def significant(value: Any, digits: int = 5) -> float | None:
    """`value` to `digits` significant digits; None for anything but a finite number."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


def points_from_records(records: Iterable[dict[str, Any]]) -> list[Point]:
    """trainer_log.jsonl records, in file order -> one point per logged step, in step order.

    LLaMA-Factory writes a training record and, at an evaluation step, an evaluation record for the same step:
    they become one point. A step lower than one already seen means that the run resumed from a checkpoint:
    the points the earlier attempt logged after that step are dropped (this attempt logs them again).
    """
    by_step: dict[int, Point] = {}
    newest = -1
    for record in records:
        step = record.get("current_steps")
        if not isinstance(step, int) or isinstance(step, bool):
            continue
        values = {
            "loss": significant(record.get("loss")),
            "evalLoss": significant(record.get("eval_loss")),
            "learningRate": significant(record.get("lr"), 4),
            "epoch": significant(record.get("epoch"), 6),
        }
        if values["loss"] is None and values["evalLoss"] is None:
            continue  # a progress-only record (the closing summary, prediction steps)
        if step < newest:
            by_step = {s: p for s, p in by_step.items() if s < step}
        newest = step
        point = by_step.setdefault(step, {"step": step})
        point.update({k: v for k, v in values.items() if v is not None})
    return [by_step[s] for s in sorted(by_step)]


def mark_checkpoints(points: list[Point], checkpoint_steps: Iterable[int]) -> list[Point]:
    """The points with `checkpoint: true` where a checkpoint of that step exists (and only there)."""
    steps = set(checkpoint_steps)
    marked = []
    for point in points:
        point = {k: v for k, v in point.items() if k != "checkpoint"}
        if point["step"] in steps:
            point["checkpoint"] = True
        marked.append(point)
    return marked


def evaluations(points: Sequence[Point]) -> list[Point]:
    return [p for p in points if "evalLoss" in p]


def best_evaluation(points: Sequence[Point], checkpointed: bool = False) -> Point | None:
    """The evaluation with the lowest eval loss (the earliest, on a tie); among checkpoints, if asked."""
    candidates = [p for p in evaluations(points) if p.get("checkpoint") or not checkpointed]
    return min(candidates, key=lambda p: p["evalLoss"]) if candidates else None


def _evenly(items: Sequence[int], count: int) -> set[int]:
    """`count` items spread evenly over `items`, the first and the last included."""
    if count <= 0:
        return set()
    if len(items) <= count:
        return set(items)
    if count == 1:
        return {items[len(items) // 2]}
    return {items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)}


def thin(points: Sequence[Point], limit: int = HISTORY_LIMIT) -> list[Point]:
    """At most `limit` points (limit >= 16): the first, the last, the best evaluation, the best evaluated
    checkpoint and every evaluation are kept (beyond EVALUATION_LIMIT evaluations, the newest
    RECENT_EVALUATIONS and an even spread of the older ones); the training points fill the rest, evenly.
    """
    if len(points) <= limit:
        return list(points)
    index_of = {id(p): i for i, p in enumerate(points)}
    keep = {0, len(points) - 1}
    for best in (best_evaluation(points), best_evaluation(points, checkpointed=True)):
        if best is not None:
            keep.add(index_of[id(best)])
    evaluated = [i for i, p in enumerate(points) if "evalLoss" in p]
    budget = min(EVALUATION_LIMIT, limit * 3 // 4)
    if len(evaluated) <= budget:
        keep.update(evaluated)
    else:
        recent = evaluated[-min(RECENT_EVALUATIONS, budget // 2) :]
        keep.update(recent)
        keep.update(_evenly(evaluated[: -len(recent)], budget - len(recent)))
    others = [i for i in range(len(points)) if i not in keep]
    keep.update(_evenly(others, limit - len(keep)))
    return [points[i] for i in sorted(keep)]


# --- over-fitting ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Overfitting:
    """The eval loss stayed above its best for `evaluations_above` evaluations; the training loss fell."""

    best: Point  # the best evaluation
    latest: Point  # the newest evaluation
    evaluations_above: int
    train_loss_from: float  # the trend of the training loss since the best evaluation
    train_loss_to: float


def _trend(points: Sequence[Point]) -> tuple[float, float] | None:
    """The least-squares line through (step, loss), at the first and the last step: robust to noise."""
    pairs = [(p["step"], p["loss"]) for p in points if "loss" in p]
    if len(pairs) < 2 or pairs[0][0] == pairs[-1][0]:
        return None
    mean_x = sum(x for x, _ in pairs) / len(pairs)
    mean_y = sum(y for _, y in pairs) / len(pairs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in pairs) / sum((x - mean_x) ** 2 for x, _ in pairs)
    first, last = pairs[0][0], pairs[-1][0]
    return mean_y + slope * (first - mean_x), mean_y + slope * (last - mean_x)


def overfitting(
    points: Sequence[Point], patience: int = DEFAULT_PATIENCE, tolerance: float = DEFAULT_TOLERANCE
) -> Overfitting | None:
    """Over-fitting, or None: the last `patience` evaluations all stayed above the best eval loss by more
    than `tolerance` (relative), and over the same steps the training loss fell by more than `tolerance`.

    A single evaluation never fires, nor does an eval loss moving within the tolerance, nor an eval loss
    that rises together with the training loss (that is divergence, not over-fitting).
    """
    patience = max(patience, 1)
    evaluated = evaluations(points)
    best = best_evaluation(points)
    if best is None:
        return None
    after = [p for p in evaluated if p["step"] > best["step"]]
    if len(after) < patience:
        return None
    threshold = best["evalLoss"] + tolerance * abs(best["evalLoss"])
    above = 0
    for point in reversed(after):
        if point["evalLoss"] <= threshold:
            break
        above += 1
    if above < patience:
        return None
    trend = _trend([p for p in points if p["step"] >= best["step"]])
    if trend is None:
        return None
    start, end = trend
    if start - end <= tolerance * abs(start):
        return None
    return Overfitting(best, after[-1], above, start, end)


# --- what the operator writes ----------------------------------------------------------------------


def checkpoint_path(output_path: str, step: int) -> str:
    return f"{output_path.rstrip('/')}/checkpoint-{step}"


def best_checkpoint(points: Sequence[Point], output_path: str) -> str | None:
    """The path on the claim of the evaluated checkpoint with the lowest eval loss, if one is there."""
    best = best_evaluation(points, checkpointed=True)
    return None if best is None else checkpoint_path(output_path, best["step"])


def history(progress: dict[str, Any] | None) -> list[Point]:
    """The points of `status.progress.history`, the malformed ones left out (the launcher writes it)."""
    points = (progress or {}).get("history") or []
    return [p for p in points if isinstance(p, dict) and isinstance(p.get("step"), int)]


def _loss(value: float) -> str:
    return f"{value:.4g}"


def condition(
    points: Sequence[Point],
    output_path: str | None,
    previous: dict[str, Any] | None,
    now: str,
    generation: int,
    patience: int = DEFAULT_PATIENCE,
) -> dict[str, Any] | None:
    """The `Overfitting` condition; None until the history holds an evaluation."""
    best = best_evaluation(points)
    if best is None:
        return None
    found = overfitting(points, patience)
    where = best_checkpoint(points, output_path) if output_path else None
    if found is None:
        status, reason = "False", "EvalLossNotRising"
        message = f"best eval loss {_loss(best['evalLoss'])} at step {best['step']}"
    else:
        status, reason = "True", "EvalLossRising"
        message = (
            f"the eval loss has stayed above its best ({_loss(best['evalLoss'])} at step {best['step']}) for "
            f"{found.evaluations_above} evaluations, {_loss(found.latest['evalLoss'])} at step "
            f"{found.latest['step']}, while the training loss fell from {_loss(found.train_loss_from)} to "
            f"{_loss(found.train_loss_to)}"
        )
    if where:
        message += f"; best checkpoint: {where}"
    elif output_path:
        message += "; no checkpoint was saved at an evaluated step (make save_steps a multiple of eval_steps)"
    return make_condition(CONDITION, (status, reason, message), previous, now, generation)


def became_overfitted(
    previous_conditions: list[dict[str, Any]], conditions: list[dict[str, Any]]
) -> str | None:
    """The message for a Warning Event when `Overfitting` turned True; None otherwise."""
    now = find_condition(conditions, CONDITION)
    if now.get("status") == "True" and find_condition(previous_conditions, CONDITION).get("status") != "True":
        return now.get("message", "")
    return None
