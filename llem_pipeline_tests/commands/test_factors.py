"""`llem factors set|import|list`: validated factors in one write; bad input names the field, value and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from llem_pipeline.commands.factors import main_factors
from llem_pipeline.storage import ResultStore


def _rows(db: Path) -> list[dict]:
    return ResultStore(db).query("SELECT name, value, unit, source, valid_from, valid_to FROM factors "
                                 "ORDER BY name, valid_from").to_pylist()


def test_set_and_list(tmp_path: Path, capsys) -> None:
    db = tmp_path / "llem.duckdb"
    assert main_factors(["set", "grid_gco2_per_kwh", "380", "--source", "Ember 2025", "--from", "2026-01-01",
                         "--db", str(db)]) == 0
    assert main_factors(["set", "price_per_kwh", "0.25", "--unit", "EUR/kWh", "--source", "tariff", "--db", str(db)]) == 0
    rows = _rows(db)
    assert [(r["name"], r["value"], r["unit"]) for r in rows] == [("grid_gco2_per_kwh", 380.0, "gCO2e/kWh"),
                                                                   ("price_per_kwh", 0.25, "EUR/kWh")]
    assert rows[0]["valid_from"].isoformat().startswith("2026-01-01T00:00:00") and rows[0]["valid_to"] is None
    capsys.readouterr()
    assert main_factors(["list", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "grid_gco2_per_kwh" in out and "Ember 2025" in out and "open" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["set", "carbon", "1", "--source", "x"], "name='carbon' is not a known factor"),
    (["set", "pue", "0.8", "--source", "x"], "value='0.8' for pue is outside [1, 5]"),
    (["set", "pue", "nan", "--source", "x"], "value='nan' for pue is outside"),
    (["set", "price_per_kwh", "0.3", "--source", "x"], "unit=None for price_per_kwh: give the currency"),
    (["set", "grid_gco2_per_kwh", "300", "--source", " "], "source=' ' for grid_gco2_per_kwh: say where"),
    (["set", "pue", "1.2", "--source", "x", "--from", "yesterday"], "valid_from='yesterday' is not a date"),
    (["set", "pue", "1.2", "--source", "x", "--from", "2026-02-01", "--to", "2026-01-01"], "is not after valid_from"),
])
def test_bad_input_is_refused_with_field_value_and_fix(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    db = tmp_path / "llem.duckdb"
    assert main_factors([*argv, "--db", str(db)]) == 1
    assert message in capsys.readouterr().err
    assert not db.exists() or _rows(db) == []


def test_import_validates_every_row_before_writing_any(tmp_path: Path, capsys) -> None:
    db = tmp_path / "llem.duckdb"
    bad = tmp_path / "bad.csv"
    bad.write_text("name,value,unit,source,valid_from,valid_to\npue,1.2,ratio,survey,,\n"
                   "grid_gco2_per_kwh,-5,gCO2e/kWh,grid,,\n", encoding="utf-8")
    assert main_factors(["import", str(bad), "--db", str(db)]) == 1
    assert f"{bad} line 3: value='-5' for grid_gco2_per_kwh is outside" in capsys.readouterr().err
    assert not db.exists() or _rows(db) == []  # the good first row was not written either
    good = tmp_path / "good.csv"
    good.write_text("name,value,unit,source,valid_from,valid_to\npue,1.2,ratio,survey,,\n"
                    "grid_gco2_per_kwh,380,gCO2e/kWh,grid,2026-01-01,2027-01-01\n", encoding="utf-8")
    assert main_factors(["import", str(good), "--db", str(db)]) == 0
    assert [r["name"] for r in _rows(db)] == ["grid_gco2_per_kwh", "pue"]
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("factor,amount\npue,1.2\n", encoding="utf-8")
    assert main_factors(["import", str(wrong), "--db", str(db)]) == 1
    assert "must name the columns" in capsys.readouterr().err
