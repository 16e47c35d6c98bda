"""The published_reference check: a real-GPU run next to published measurements of the same model, engine,
GPU and concurrency (the published_comparison view over published_results). Information only: it always
passes and reports the ratio; someone else's number is never a pass or fail criterion."""

from __future__ import annotations

from typing import Any

from llem_pipeline.defs.results.quality import CheckOutcome

NAME = "published_reference"
DESCRIPTION = ("Information only, never fails: J/token against published results of the same model, engine, GPU "
               "and max_num_seqs (published_results, with their sources); simulated runs have no reference.")


def check_published_reference(rows: list[dict[str, Any]], is_simulated: bool) -> CheckOutcome:
    """Return the (always passing) outcome: the ratio of this run's J/token to each matching published value,
    or why none applies. ``rows``: the run's published_comparison rows."""
    if is_simulated:
        return CheckOutcome(NAME, True, "WARN", "no published reference applies: this run is simulated, and a "
                            "simulated run is never compared with real measurements", {"matches": 0})
    if not rows:
        return CheckOutcome(NAME, True, "WARN", "no published result matches this run's model, engine, GPU and "
                            "max_num_seqs (see the published_results table)", {"matches": 0})
    parts = [f"{r['ratio_to_published']:.2f}× {r['source']} ({r['published_j_per_token']:g} J/token, "
             f"max_num_seqs={r['max_num_seqs']}, {r['task']})" for r in rows]
    best = rows[0]
    return CheckOutcome(NAME, True, "WARN", "information: J/token is " + "; ".join(parts), {
        "matches": len(rows), "j_per_token": best["j_per_token"],
        "published_j_per_token": best["published_j_per_token"], "ratio_to_published": best["ratio_to_published"],
        "source": best["source"], "citation": best["citation"],
    })
