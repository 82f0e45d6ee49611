"""The benchmark report: how the scale-out scenario's rounds are compared and printed."""

from __future__ import annotations

from batchsite.bench import harness, scenarios


def scale_out_result() -> dict:
    return {
        "items": 200_000,
        "seconds": 20.0,
        "items_per_s": 10_000.0,
        "clusters": {
            "1": {"seconds": 20.0, "items_per_s": 10_000.0, "vs_1_cluster": 1.0},
            "2": {"seconds": 12.5, "items_per_s": 16_000.0, "vs_1_cluster": 1.6},
            "3": {"seconds": 10.0, "items_per_s": 20_000.0, "vs_1_cluster": 2.0},
        },
    }


def test_ratios__scale_out_compares_each_cluster_count_with_one():
    found = harness.ratios({"scale-out": scale_out_result()})

    assert found == {
        "scale-out 2 clusters / 1 cluster (items/s)": 1.6,
        "scale-out 3 clusters / 1 cluster (items/s)": 2.0,
    }


def test_format_table__scale_out_lists_every_round():
    report = {
        "database": "postgres",
        "broker": "redis",
        "items": 200_000,
        "clusters": 1,
        "workers": 2,
        "scenarios": {"scale-out": scale_out_result()},
        "ratios": harness.ratios({"scale-out": scale_out_result()}),
    }

    table = harness.format_table(report)

    assert "1 cluster(s) 10,000/s; 2 cluster(s) 16,000/s; 3 cluster(s) 20,000/s" in table
    assert "scale-out 3 clusters / 1 cluster (items/s): 2.00x" in table


def test_scale_out__is_run_only_when_asked_for():
    assert "scale-out" in scenarios.EXTRA_SCENARIOS
    assert "scale-out" not in scenarios.SCENARIOS
