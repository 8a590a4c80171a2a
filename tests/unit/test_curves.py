"""Loss curves: the bounded history, the over-fitting rule, the best checkpoint (kubetune.status.curves)."""

from __future__ import annotations

import itertools
import json
import math
import random

import pytest

from kubetune.status import curves
from tests import specs


def train(step: int, loss: float) -> dict:
    return {"current_steps": step, "total_steps": 10000, "loss": loss, "lr": 1e-4, "epoch": step / 100}


def evaluate(step: int, eval_loss: float) -> dict:
    return {"current_steps": step, "total_steps": 10000, "eval_loss": eval_loss, "epoch": step / 100}


def run(steps: int, eval_every: int, eval_loss=lambda s: 2.0 - s / 1000, loss=lambda s: 2.0 - s / 900):
    """Records as LLaMA-Factory writes them: a training record each step, an evaluation record after it."""
    records = []
    for step in range(1, steps + 1):
        records.append(train(step, loss(step)))
        if step % eval_every == 0:
            records.append(evaluate(step, eval_loss(step)))
    return records


# --- the history -----------------------------------------------------------------------------------


def test_a_training_and_an_evaluation_record_of_one_step_are_one_point() -> None:
    records = [train(1, 2.0), train(2, 1.9), evaluate(2, 2.1234567), {"current_steps": 2, "epoch": 0.02}]
    assert curves.points_from_records(records) == [
        {"step": 1, "loss": 2.0, "learningRate": 1e-4, "epoch": 0.01},
        {"step": 2, "loss": 1.9, "evalLoss": 2.1235, "learningRate": 1e-4, "epoch": 0.02},
    ]


def test_a_resumed_run_replaces_what_the_dead_attempt_logged_after_its_checkpoint() -> None:
    first_attempt = [train(s, 2.0) for s in range(1, 28)]  # died at step 27, checkpoint at 20
    second_attempt = [train(s, 1.0) for s in range(21, 31)]
    points = curves.points_from_records(first_attempt + second_attempt)
    assert [p["step"] for p in points] == list(range(1, 31))
    assert {p["loss"] for p in points if p["step"] > 20} == {1.0}


def test_thinning_keeps_first_last_every_evaluation_and_the_bound() -> None:
    points = curves.points_from_records(run(steps=5000, eval_every=50))
    assert len(points) == 5000
    thinned = curves.thin(points)
    assert len(thinned) == curves.HISTORY_LIMIT
    assert thinned[0]["step"] == 1 and thinned[-1]["step"] == 5000
    assert [p["step"] for p in curves.evaluations(thinned)] == list(range(50, 5001, 50))
    steps = [p["step"] for p in thinned]
    assert steps == sorted(set(steps))
    gaps = [b - a for a, b in itertools.pairwise(steps)]
    assert max(gaps) <= 2 * 5000 / (curves.HISTORY_LIMIT - 100), "the training curve is spread evenly"


def test_thinning_with_more_evaluations_than_fit_keeps_the_best_and_the_newest() -> None:
    # An evaluation every step: the best one is in the middle and must survive.
    points = curves.points_from_records(run(steps=3000, eval_every=1, eval_loss=lambda s: abs(s - 1234) + 1))
    thinned = curves.thin(points)
    assert len(thinned) <= curves.HISTORY_LIMIT
    assert curves.best_evaluation(thinned)["step"] == 1234
    kept = [p["step"] for p in curves.evaluations(thinned)]
    assert kept[-curves.RECENT_EVALUATIONS :] == list(range(3001 - curves.RECENT_EVALUATIONS, 3001))
    assert thinned[0]["step"] == 1 and thinned[-1]["step"] == 3000


def test_the_crd_states_the_same_bound() -> None:
    from kubetune.api.crd import finetunejob_crd

    schema = finetunejob_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    history = schema["properties"]["status"]["properties"]["progress"]["properties"]["history"]
    assert history["maxItems"] == curves.HISTORY_LIMIT


def test_a_short_history_is_kept_whole() -> None:
    points = curves.points_from_records(run(steps=40, eval_every=10))
    assert curves.thin(points) == points


def test_the_worst_case_history_stays_small() -> None:
    """What docs/finetunejob.md states: 200 points with every field and the longest numbers, under 24 KiB."""
    records = [
        {"current_steps": s, "loss": math.pi * 1e-5, "eval_loss": math.e * 1e-5, "lr": 1 / 3 * 1e-4,
         "epoch": s / 7}
        for s in range(1_000_000, 1_010_000)
    ]  # fmt: skip
    thinned = curves.mark_checkpoints(curves.thin(curves.points_from_records(records)), range(2_000_000))
    assert len(thinned) == curves.HISTORY_LIMIT
    assert len(json.dumps(thinned, separators=(",", ":"))) <= 24 * 1024


# --- over-fitting ----------------------------------------------------------------------------------


def overfitting_curve(noise: float = 0.0, seed: int = 0) -> list[dict]:
    """Eval loss falls to its best at step 400, then rises; the training loss falls all along."""
    rng = random.Random(seed)

    def eval_loss(step: int) -> float:
        return 1.0 + abs(step - 400) / 1000 + rng.uniform(-noise, noise)

    return curves.points_from_records(
        run(steps=800, eval_every=100, eval_loss=eval_loss, loss=lambda s: 2.0 - s / 1000)
    )


def test_rising_eval_loss_with_falling_training_loss_is_overfitting() -> None:
    found = curves.overfitting(overfitting_curve(), patience=3)
    assert found is not None
    assert found.best["step"] == 400
    assert found.latest["step"] == 800
    assert found.evaluations_above == 4
    assert found.train_loss_from > found.train_loss_to


def test_it_takes_patience_evaluations_above_the_best() -> None:
    points = overfitting_curve()
    until_600 = [p for p in points if p["step"] <= 600]  # two evaluations after the best
    assert curves.overfitting(until_600, patience=3) is None
    assert curves.overfitting(until_600, patience=2) is not None


def test_noise_within_the_tolerance_is_not_overfitting() -> None:
    rng = random.Random(7)
    flat = curves.points_from_records(
        run(steps=2000, eval_every=100, eval_loss=lambda s: 1.0 + rng.uniform(-0.004, 0.004))
    )
    assert len(curves.evaluations(flat)) == 20
    assert curves.overfitting(flat, patience=3, tolerance=0.01) is None
    # The same kind of noise on a real rise still fires.
    assert curves.overfitting(overfitting_curve(noise=0.004, seed=3), patience=3) is not None


def test_a_single_evaluation_never_fires() -> None:
    points = curves.points_from_records([train(1, 3.0), train(2, 1.0), evaluate(2, 9.0), train(3, 0.1)])
    assert curves.overfitting(points, patience=1) is None
    assert curves.overfitting([], patience=1) is None


def test_eval_and_training_loss_rising_together_is_not_overfitting() -> None:
    diverging = curves.points_from_records(
        run(steps=800, eval_every=100, eval_loss=lambda s: 1.0 + s / 1000, loss=lambda s: 1.0 + s / 1000)
    )
    assert curves.overfitting(diverging, patience=1) is None


def test_an_eval_loss_that_recovers_is_no_longer_overfitting() -> None:
    points = overfitting_curve()
    recovered = [*points, {"step": 900, "loss": 1.0, "evalLoss": 0.9}]
    assert curves.overfitting(recovered) is None


# --- what the operator writes ----------------------------------------------------------------------


def test_the_best_checkpoint_is_the_best_evaluated_one_on_the_claim() -> None:
    points = curves.mark_checkpoints(overfitting_curve(), [300, 500, 800])  # 400 was rotated away
    assert curves.best_evaluation(points)["step"] == 400
    assert curves.best_checkpoint(points, "runs/team/ner/") == "runs/team/ner/checkpoint-300"
    assert curves.best_checkpoint(overfitting_curve(), "runs/team/ner") is None


@pytest.mark.parametrize("checkpoints", [[400, 800], []])
def test_the_condition_names_the_best_step_and_checkpoint(checkpoints: list[int]) -> None:
    points = curves.mark_checkpoints(overfitting_curve(), checkpoints)
    condition = curves.condition(points, "runs/team/ner", None, "2026-12-01T00:00:00Z", 3)
    assert condition is not None
    assert condition["type"] == "Overfitting"
    assert condition["status"] == "True"
    assert condition["reason"] == "EvalLossRising"
    assert "at step 400" in condition["message"]
    if checkpoints:
        assert condition["message"].endswith("best checkpoint: runs/team/ner/checkpoint-400")
    else:
        assert "save_steps a multiple of eval_steps" in condition["message"]
    assert condition["observedGeneration"] == 3


def test_the_condition_is_false_while_the_eval_loss_improves_and_absent_without_evaluations() -> None:
    improving = curves.points_from_records(run(steps=400, eval_every=100))
    condition = curves.condition(improving, "runs/x", None, "t1", 1)
    assert condition["status"] == "False"
    assert condition["message"].startswith("best eval loss 1.6 at step 400")
    no_evaluations = curves.points_from_records(run(steps=50, eval_every=100))
    assert curves.condition(no_evaluations, "runs/x", None, "t1", 1) is None


def test_the_transition_time_moves_only_when_the_condition_flips() -> None:
    points = overfitting_curve()
    first = curves.condition(points, "runs/x", None, "t1", 1)
    assert curves.condition(points, "runs/x", first, "t2", 1)["lastTransitionTime"] == "t1"
    assert curves.became_overfitted([], [first]) == first["message"]
    assert curves.became_overfitted([first], [first]) is None


# --- the launcher's reporter -----------------------------------------------------------------------


def write_log(path, records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_the_reporter_sends_the_bounded_history_and_the_best_evaluation(tmp_path) -> None:
    from kubetune.launcher.progress import Reporter

    log = tmp_path / "trainer_log.jsonl"
    write_log(log, run(steps=1000, eval_every=100, eval_loss=lambda s: 1.0 + abs(s - 300) / 1000))
    for step in (300, 600):  # checkpoints on the claim, complete
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-900").mkdir()  # being written: not complete yet
    sent: list[dict] = []
    assert Reporter(log, sent.append, interval=3600).report_once() is True
    progress = sent[0]
    assert progress["step"] == 1000
    assert (progress["bestEvalLoss"], progress["bestEvalStep"]) == (1.0, 300)
    assert progress["evalLoss"] == 1.7
    history = progress["history"]
    assert len(history) == curves.HISTORY_LIMIT
    assert len(curves.evaluations(history)) == 10
    assert [p["step"] for p in history if p.get("checkpoint")] == [300, 600]


def test_the_reporter_never_raises_from_stop_and_retries_the_final_report(tmp_path) -> None:
    """A finished training is never turned into a failure by its progress report (issue 10, point 12)."""
    from kubetune.launcher.progress import Reporter

    log = tmp_path / "trainer_log.jsonl"
    write_log(log, run(steps=4, eval_every=2))
    calls: list[dict] = []
    waits: list[float] = []

    def flaky(progress: dict) -> None:
        calls.append(progress)
        if len(calls) < 3:
            raise ConnectionError("API server unreachable")

    # Not started: the final report is stop()'s alone, whatever a thread would have sent before it.
    reporter = Reporter(log, flaky, interval=3600, sleep=waits.append)
    reporter.stop()
    assert len(calls) == 3 and calls[-1]["step"] == 4, "retried until the final state got through"
    assert waits == [2.0, 4.0]

    def down(progress: dict) -> None:
        raise RuntimeError("401 Unauthorized: the token expired")

    reporter = Reporter(log, down, interval=3600, sleep=waits.append)
    reporter.stop()  # gives up after its attempts, raises nothing
    assert reporter.failures == reporter.final_attempts


@pytest.mark.parametrize("breakage", ["permission denied", "a directory", "metrics fail", "not json"])
def test_errors_reading_the_log_are_logged_and_retried(tmp_path, monkeypatch, breakage: str) -> None:
    from kubetune.launcher import progress

    log = tmp_path / "trainer_log.jsonl"
    write_log(log, run(steps=4, eval_every=2))
    sent: list[dict] = []
    on_record = None
    if breakage == "permission denied":  # as a non-root pod would see a claim it cannot read

        def denied(path):
            raise PermissionError(13, "Permission denied", str(path))

        monkeypatch.setattr(progress, "read_records", denied)
    elif breakage == "a directory":
        log.unlink()
        log.mkdir()
    elif breakage == "metrics fail":
        on_record = lambda state: 1 / 0  # noqa: E731
    else:
        log.write_bytes(b"\xff\xfe\x00garbage\n")
    reporter = progress.Reporter(log, sent.append, interval=3600, on_record=on_record, sleep=lambda _s: None)
    reporter.stop()
    if breakage == "metrics fail":
        assert sent and sent[-1]["step"] == 4, "broken metrics do not stop the status report"
    elif breakage == "not json":
        assert sent == [] and reporter.failures == 0, "nothing to report yet"
    else:
        assert sent == [] and reporter.failures == reporter.final_attempts


# --- in the FineTuneJob's status -------------------------------------------------------------------


def test_the_status_gets_the_overfitting_condition_the_best_checkpoint_and_a_warning() -> None:
    from kubetune.status.conditions import Event
    from kubetune.status.finetunejob import Observation, compute, transitions

    history = curves.mark_checkpoints(overfitting_curve(), [400, 800])
    running = {"phase": "Running", "reason": "Training", "attempt": 1, "progress": {"history": history}}
    output = {"claim": "shared", "path": "runs/team/ner", "adapterPath": "runs/team/ner"}
    observation = Observation(generation=2, now="2026-12-01T00:00:00Z", previous=running, output=output)
    status = compute(observation)
    overfitting = next(c for c in status["conditions"] if c["type"] == "Overfitting")
    assert overfitting["status"] == "True"
    assert status["output"]["bestCheckpoint"] == "runs/team/ner/checkpoint-400"
    assert status["output"]["adapterPath"] == "runs/team/ner", "the final adapter stays where it was"
    warnings = [e for e in transitions(running, status) if e.reason == "Overfitting"]
    assert warnings == [Event("Warning", "Overfitting", overfitting["message"])]
    assert not [e for e in transitions({**running, **status}, status) if e.reason == "Overfitting"]

    no_evaluations = {"progress": {"history": []}}
    status = compute(Observation(generation=2, now="t", previous=no_evaluations, output=output))
    assert "Overfitting" not in [c["type"] for c in status["conditions"]]
    assert "bestCheckpoint" not in status["output"]


def test_an_api_server_that_never_answers_does_not_hold_a_finished_training(tmp_path) -> None:
    import threading
    import time

    from kubetune.launcher.progress import Reporter

    log = tmp_path / "trainer_log.jsonl"
    write_log(log, run(steps=4, eval_every=2))
    never = threading.Event()
    reporter = Reporter(log, lambda _p: never.wait(), interval=3600, sleep=lambda _s: None, send_timeout=0.2)
    started = time.monotonic()
    reporter.stop()
    assert time.monotonic() - started < 5
    assert reporter.failures == reporter.final_attempts
    never.set()


def test_the_patience_comes_from_the_spec() -> None:
    from kubetune.api.finetunejob import FineTuneJobSpec
    from kubetune.status.finetunejob import Observation, compute

    history = curves.mark_checkpoints(overfitting_curve(), [400, 800])
    running = {"phase": "Running", "reason": "Training", "attempt": 1, "progress": {"history": history}}
    evaluations = len([p for p in history if p.get("evalLoss") is not None])
    patient = Observation(generation=2, now="t", previous=running, overfitting_patience=evaluations + 1)
    overfitting = next(c for c in compute(patient)["conditions"] if c["type"] == "Overfitting")
    assert overfitting["status"] == "False", "more patience than evaluations: not yet"
    spec = specs.finetunejob_spec()
    assert FineTuneJobSpec.model_validate(spec).overfitting_patience == curves.DEFAULT_PATIENCE
    assert FineTuneJobSpec.model_validate({**spec, "overfittingPatience": 5}).overfitting_patience == 5
