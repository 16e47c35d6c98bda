"""scripts/gpu_check.sh --dry-run end to end: probe (fake pynvml), plan, tiny-model worker runs, summary."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_dry_run_writes_a_complete_summary(tmp_path: Path) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    # The dry run's own budget is 110 s, and a run that no longer fits the remaining budget is skipped: a
    # budget decides what runs, so the test gives it far more than the four tiny runs take (about a minute
    # on 2 quiet cores), and the test's own limits more still: a loaded machine slows the test, never fails it.
    env = {**os.environ, "OUT": str(out), "GPU_CHECK_WORK": str(work), "PYTHON": sys.executable,
           "GPU_CHECK_BUDGET_S": os.environ.get("GPU_CHECK_BUDGET_S", "900")}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--dry-run"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=1100)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "DRY RUN" in proc.stdout and "GPU_CHECK runs=4 ok=4 agreement_ok=" in proc.stdout
    files = sorted(p.name for p in out.iterdir())
    assert files == ["budget.md", "gpu_check.log", "probe.json", "runs.tar.gz", "summary.csv", "summary.md"]
    assert all(p.is_file() for p in out.iterdir())  # flat: what comes back from a device machine
    probe = json.loads((out / "probe.json").read_text())
    assert probe["fake"] is True and probe["devices"][0]["energy_counter"]["period_ms"] > 0
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [(r["model"], int(r["batch"])) for r in rows] == [("llem:tiny", b) for b in (1, 8, 32, 128)]
    for r in rows:
        assert r["status"] == "ok" and r["device_kind"] == "simulated"
        assert float(r["j_per_token"]) > 0 and float(r["tok_per_s"]) > 0 and float(r["avg_w"]) > 0
        assert float(r["agreement"]) >= 0 and r["agreement_ok"] in {"True", "False"}  # reported, enforced on NVML only
        assert float(r["uncertainty_j"]) >= 0
        assert "simulated_device" in r["warnings"]
    with tarfile.open(out / "runs.tar.gz") as tar:
        names = set(tar.getnames())
    assert {f"runs/tiny-b{b}/result.json" for b in (1, 8, 32, 128)} <= names
    assert "configs/tiny-b128.json" in names
