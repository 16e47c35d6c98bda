"""Study files on disk: each file on its own within its limits, hostile files reported and skipped,
duplicate names an error of both files, limits from the environment."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from llem_pipeline.defs.experiments.registry import scan_report_lines, scan_studies
from llem_pipeline.domain.errors import ConfigError
from llem_pipeline.domain.study_limits import StudyLimits
from llem_pipeline.paths import PROJECT_ROOT
from llem_pipeline.studies import discover_studies, load_study, read_studies, study_limits

BOMB = "name: bomb\nbase:\n  model: x\n  a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9))
MILLION = "name: million\nbase: {model: m}\nsweep:\n" + "".join(
    f"  {k}: [{', '.join(str(v) for v in range(1, 11))}]\n"
    for k in ("pytorch.batch_size", "max_output_tokens", "n", "max_input_tokens", "random_seed", "warmup.n_warmup"))
SKIPPING = "name: skipping\nbase: {model: m}\nsweep: {pytorch.batch_size: [0, 1]}\n"


def hostile_folder(root: Path) -> Path:
    """Return a studies folder with demo and nightly plus every hostile file this suite knows."""
    folder = root / "studies"
    folder.mkdir()
    for name in ("demo.yaml", "nightly.yaml"):
        shutil.copy(PROJECT_ROOT / "studies" / name, folder / name)
    (folder / "bomb.yaml").write_text(BOMB)
    (folder / "million.yaml").write_text(MILLION)
    with (folder / "huge.yaml").open("wb") as fh:  # 50 MB, sparse: nothing is written but its size
        fh.truncate(50 * 1024 * 1024)
    (folder / "skipping.yaml").write_text(SKIPPING)
    (folder / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    (folder / "recursive.yaml").write_text("name: rec\nbase: &a {model: m, x: *a}\n")
    (folder / "inf.yaml").write_text("name: inf\nbase: {model: m, baseline: {cache_ttl_seconds: .inf}}\n")
    os.mkfifo(folder / "fifo.yaml")  # reading it would block forever: never opened
    (folder / "dir.yaml").mkdir()
    return folder


def test_hostile_files_are_reported_and_every_good_study_still_loads(tmp_path: Path) -> None:
    clean = scan_studies(PROJECT_ROOT / "studies")
    scan = scan_studies(hostile_folder(tmp_path))
    assert set(scan.plans) == {"demo", "nightly", "skipping"}
    for name in ("demo", "nightly"):
        assert scan.plans[name].config_hashes == clean.plans[name].config_hashes
    assert scan.files == {"demo": "demo.yaml", "nightly": "nightly.yaml", "skipping": "skipping.yaml"}
    errors = scan.errors
    assert set(errors) == {"bomb.yaml", "million.yaml", "huge.yaml", "latin1.yaml", "recursive.yaml", "inf.yaml",
                           "fifo.yaml", "dir.yaml"}
    assert "52,428,800 bytes, over the limit of 1,048,576 bytes" in errors["huge.yaml"]
    assert "1,000,000 points" in errors["million.yaml"]
    assert "alias budget" in errors["bomb.yaml"]
    assert "not UTF-8" in errors["latin1.yaml"]
    assert "recursive document" in errors["recursive.yaml"]
    assert "baseline.cache_ttl_seconds = inf" in errors["inf.yaml"]
    assert "not a regular file" in errors["fifo.yaml"] and "not a regular file" in errors["dir.yaml"]
    for name, message in errors.items():
        assert name in message and len(message) < 1000, (name, message)


def test_report_lines_name_skipped_points_and_bad_files(tmp_path: Path) -> None:
    scan = scan_studies(hostile_folder(tmp_path))
    lines = scan_report_lines(scan)
    assert lines[0] == ("skipping.yaml: skipped sweep point {'pytorch.batch_size': 0}: "
                        "pytorch.batch_size = 0: Input should be greater than or equal to 1")
    bad = [line for line in lines if "invalid study file (skipped)" in line]
    assert len(bad) == len(scan.errors) == len(lines) - 1
    assert all("\n" not in line and "\x1b" not in line for line in lines)
    assert scan_report_lines(scan, study="demo", invalid_files=False) == []
    assert scan_report_lines(scan, study="skipping", invalid_files=False) == lines[:1]


def test_report_lines_cap_the_skipped_points_and_escape_control_characters(tmp_path: Path) -> None:
    folder = tmp_path / "studies"
    folder.mkdir()
    values = ", ".join(["0"] * 30 + ["1"])
    (folder / "many.yaml").write_text(f"name: many\nbase: {{model: m}}\nsweep: {{pytorch.batch_size: [{values}], "
                                      "pytorch.revision: [\"\\e[31mred\"]}\n")
    lines = scan_report_lines(scan_studies(folder), max_skipped=5)
    assert len(lines) == 6 and lines[-1] == "many.yaml: ... and 25 more skipped sweep point(s)"
    assert all("\x1b" not in line for line in lines) and "\\x1b[31mred" in lines[0]


def test_duplicate_study_names_are_an_error_naming_both_files(tmp_path: Path) -> None:
    folder = tmp_path / "studies"
    folder.mkdir()
    shutil.copy(PROJECT_ROOT / "studies" / "demo.yaml", folder / "demo.yaml")
    shutil.copy(PROJECT_ROOT / "studies" / "demo.yaml", folder / "demo-copy.yaml")
    shutil.copy(PROJECT_ROOT / "studies" / "nightly.yaml", folder / "nightly.yaml")
    scan = scan_studies(folder)
    assert set(scan.plans) == {"nightly"}
    for this, other in (("demo.yaml", "demo-copy.yaml"), ("demo-copy.yaml", "demo.yaml")):
        message = scan.errors[this]
        assert "study name 'demo' is also declared by" in message
        assert str(folder / this) in message and str(folder / other) in message
    found = discover_studies(folder)
    assert set(found) == {"nightly", "demo.yaml", "demo-copy.yaml"}
    assert isinstance(found["demo.yaml"][1], ConfigError)


def test_an_invalid_file_never_hides_a_valid_study_of_the_same_name(tmp_path: Path) -> None:
    folder = tmp_path / "studies"
    folder.mkdir()
    (folder / "demo.yaml").write_text("name: demo\nbase: {model: m, n: -1}\n")
    (folder / "other.yaml").write_text("name: demo\nbase: {model: m}\n")
    found = discover_studies(folder)
    assert set(found) == {"demo", "demo.yaml"}
    assert found["demo"][0].name == "other.yaml"


def test_the_fingerprint_changes_with_any_file_but_never_reads_an_oversized_one(tmp_path: Path) -> None:
    folder = hostile_folder(tmp_path)
    first = scan_studies(folder).fingerprint
    assert scan_studies(folder).fingerprint == first
    with (folder / "huge.yaml").open("r+b") as fh:
        fh.truncate(51 * 1024 * 1024)
    second = scan_studies(folder).fingerprint
    assert second != first
    (folder / "skipping.yaml").write_text(SKIPPING.replace("[0, 1]", "[0, 2]"))
    assert scan_studies(folder).fingerprint not in (first, second)


def test_limits_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert study_limits({}) == StudyLimits()
    limits = study_limits({"LLEM_STUDY_MAX_BYTES": "100", "LLEM_STUDY_MAX_POINTS": "2",
                           "LLEM_STUDY_TIME_BUDGET_S": "0"})
    assert (limits.max_file_bytes, limits.max_points, limits.time_budget_s) == (100, 2, None)
    for var, value in (("LLEM_STUDY_MAX_POINTS", "0"), ("LLEM_STUDY_MAX_POINTS", "ten"),
                       ("LLEM_STUDY_MAX_BYTES", "-5"), ("LLEM_STUDY_TIME_BUDGET_S", "nan"),
                       ("LLEM_STUDY_TIME_BUDGET_S", "inf")):
        with pytest.raises(ConfigError, match=var):
            study_limits({var: value})
    monkeypatch.setenv("LLEM_STUDY_MAX_POINTS", "2")
    folder = tmp_path / "studies"
    folder.mkdir()
    shutil.copy(PROJECT_ROOT / "studies" / "demo.yaml", folder / "demo.yaml")
    scan = scan_studies(folder)
    assert "3 points" in scan.errors["demo.yaml"] and "over the limit of 2 points" in scan.errors["demo.yaml"]


def test_a_small_size_limit_names_the_size_and_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "demo.yaml"
    shutil.copy(PROJECT_ROOT / "studies" / "demo.yaml", path)
    size = path.stat().st_size
    with pytest.raises(ConfigError, match=f"{size:,} bytes, over the limit of 100 bytes"):
        load_study(path, StudyLimits(max_file_bytes=100))
    assert load_study(path, StudyLimits(max_file_bytes=size)).name == "demo"


def test_an_unexpected_failure_is_that_files_error_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import llem_pipeline.studies as studies

    folder = tmp_path / "studies"
    folder.mkdir()
    shutil.copy(PROJECT_ROOT / "studies" / "demo.yaml", folder / "demo.yaml")
    (folder / "boom.yaml").write_text("name: boom\nbase: {model: m}\n")
    real = studies.parse_study_yaml

    def explode(text, source, **kw):
        if "boom" in source:
            raise RecursionError("maximum recursion depth exceeded")
        return real(text, source, **kw)

    monkeypatch.setattr(studies, "parse_study_yaml", explode)
    files = {f.path.name: f for f in read_studies(folder)}
    assert files["demo.yaml"].plan is not None
    assert str(files["boom.yaml"].outcome).endswith("cannot be read as a study (RecursionError: maximum recursion depth exceeded)")


def test_each_file_has_its_own_time_budget(tmp_path: Path) -> None:
    class Clock:
        """Advances 0.25 s per reading: one study file takes a few readings, four files many more."""

        now = 0.0
        reads = 0

        def __call__(self) -> float:
            self.reads += 1
            self.now += 0.25
            return self.now

    folder = tmp_path / "studies"
    folder.mkdir()
    text = (PROJECT_ROOT / "studies" / "demo.yaml").read_text()
    for i in range(4):
        (folder / f"s{i}.yaml").write_text(text.replace("name: demo", f"name: s{i}"))
    clock = Clock()
    files = read_studies(folder, StudyLimits(time_budget_s=3.0), clock)
    assert [f.plan is not None for f in files] == [True] * 4, [str(f.outcome) for f in files]
    assert clock.now > 3.0  # all four together took longer than one file's budget
    slow = read_studies(folder, StudyLimits(time_budget_s=0.5), Clock())
    assert all("over the time budget of 0.5 s" in str(f.outcome) for f in slow)
