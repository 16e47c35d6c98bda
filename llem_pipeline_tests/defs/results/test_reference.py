"""The published_reference check: information only (always passes), never for a simulated run."""

from __future__ import annotations

from llem_pipeline.defs.results.reference import check_published_reference


def test_simulated_runs_have_no_reference_and_the_check_passes() -> None:
    out = check_published_reference([{"ratio_to_published": 2.0}], is_simulated=True)
    assert out.passed and "simulated" in out.description and out.metadata["matches"] == 0


def test_a_real_run_gets_its_ratio_to_the_published_value_and_still_passes() -> None:
    row = {"ratio_to_published": 3.5, "source": "ML.ENERGY Leaderboard v3.0 (2025-12-01)", "j_per_token": 1.59,
           "published_j_per_token": 0.455, "max_num_seqs": 8, "task": "lm-arena-chat", "citation": "c"}
    out = check_published_reference([row], is_simulated=False)
    assert out.passed and out.metadata["ratio_to_published"] == 3.5 and "3.50× ML.ENERGY" in out.description
    none = check_published_reference([], is_simulated=False)
    assert none.passed and "no published result matches" in none.description
