"""Resolving a config hash: from the study files, else from the registered copy; unknown hashes fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from llem_pipeline.defs.experiments.registry import remember_config, resolve_config, scan_studies
from llem_pipeline.domain import compute_measurement_config_hash
from llem_pipeline.domain.errors import ConfigError
from llem_pipeline.paths import PROJECT_ROOT


def test_scan_reads_demo_and_nightly(llem_env: Path) -> None:
    scan = scan_studies(PROJECT_ROOT / "studies")
    assert {"demo", "nightly"} <= set(scan.plans)
    assert len(scan.plans["demo"].config_hashes) == 3
    h = scan.plans["demo"].config_hashes[0]
    assert scan.studies_of(h) == ["demo"]
    assert len(scan.fingerprint) == 16


def test_resolve_from_registered_copy_after_the_study_changed(llem_env: Path, tmp_path: Path) -> None:
    config = scan_studies(PROJECT_ROOT / "studies").plans["demo"].experiments[0]
    h = compute_measurement_config_hash(config)
    empty = tmp_path / "no_studies"
    empty.mkdir()
    with pytest.raises(ConfigError, match=h):
        resolve_config(h, empty)
    remember_config(h, config)
    assert compute_measurement_config_hash(resolve_config(h, empty)) == h


def test_resolve_prefers_a_registered_copy_that_hashes_right(llem_env: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import llem_pipeline.defs.experiments.registry as registry

    config = scan_studies(PROJECT_ROOT / "studies").plans["demo"].experiments[0]
    h = compute_measurement_config_hash(config)
    remember_config(h, config)
    scans: list[object] = []
    real_scan = registry.scan_studies
    monkeypatch.setattr(registry, "scan_studies", lambda folder=None: scans.append(folder) or real_scan(folder))
    assert compute_measurement_config_hash(resolve_config(h)) == h
    assert scans == []  # the study files were not read
    # a copy that no longer hashes to its name is not trusted: the study files decide
    path = registry.config_cache_path(h)
    text = path.read_text(encoding="utf-8")
    tampered = text.replace(f'"n": {config.n}', f'"n": {config.n + 1}')
    assert tampered != text
    path.write_text(tampered, encoding="utf-8")
    assert compute_measurement_config_hash(resolve_config(h, PROJECT_ROOT / "studies")) == h
    assert len(scans) == 1
