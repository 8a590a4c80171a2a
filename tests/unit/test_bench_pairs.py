"""The FineTuneJob bench's --pairs: which pair it reports, and what it keeps of the others."""

from __future__ import annotations

from typing import Any

from tests.bench.bench_finetunejobs import median_pair


def run(p50_ratio: float | None, floor_p50: float = 20.0, floor_wall: float = 40.0) -> dict[str, Any]:
    operator_p50 = None if p50_ratio is None else floor_p50 * p50_ratio
    return {
        "count": 1000,
        "floor": {"count": 1000, "wall_s": floor_wall, "time_to_running": {"p50": floor_p50}},
        "operator": {
            "count": 1000,
            "wall_s": floor_wall + 5.0,
            "time_to_running": {"p50": operator_p50},
            "extra": {"reconciles": {"count": 2050}, "operator_cpu_s": 13.0},
        },
        "ratio": {"time_to_running_p50": p50_ratio, "time_to_running_p90": 1.1},
    }


def test_one_run_is_reported_as_it_is() -> None:
    only = run(1.3)
    assert median_pair([only]) == only


def test_the_pair_with_the_median_p50_ratio_is_reported_and_every_pair_is_kept() -> None:
    runs = [run(1.3, floor_wall=50.0), run(1.1, floor_wall=39.0), run(1.2, floor_wall=45.0)]
    entry = median_pair(runs)
    assert entry["ratio"]["time_to_running_p50"] == 1.2
    assert entry["floor"]["wall_s"] == 45.0
    assert [p["ratio"]["time_to_running_p50"] for p in entry["pairs"]] == [1.3, 1.1, 1.2]  # in run order
    assert entry["pairs"][0] == {
        "ratio": {"time_to_running_p50": 1.3, "time_to_running_p90": 1.1},
        "wall_ratio": 1.1,  # 55 / 50
        "floor_p50_s": 20.0,
        "floor_wall_s": 50.0,
        "operator_p50_s": 26.0,
        "operator_wall_s": 55.0,
        "reconciles_per_job": 2.05,
        "operator_cpu_ms_per_job": 13.0,
    }


def test_of_an_even_number_of_pairs_the_lower_median_is_reported() -> None:
    assert median_pair([run(1.4), run(1.1)])["ratio"]["time_to_running_p50"] == 1.1


def test_a_pair_that_timed_out_is_kept_but_not_reported() -> None:
    entry = median_pair([run(None), run(1.2)])
    assert entry["ratio"]["time_to_running_p50"] == 1.2
    assert len(entry["pairs"]) == 2
