"""Conversion factors (the ``factors`` table, migration 7): grid carbon intensity, PUE and the price of a kWh,
each with its source and validity. The views (``carbon_cost``) join them at query time, so changing a
factor re-prices every stored run; nothing of it enters a config hash.

``parse_factor`` validates one factor and raises FactorError naming the field, the value and the fix;
``read_factors_csv`` validates a whole CSV before anything is written; ``ResultStore.write_factors``
writes the rows in one transaction.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llem_pipeline.storage.errors import StorageError

# name -> (default unit or None when the unit must be given, lowest value, highest value, what it means)
FACTORS: dict[str, tuple[str | None, float, float, str]] = {
    "grid_gco2_per_kwh": ("gCO2e/kWh", 0.0, 2000.0, "grams of CO2-equivalent per kWh drawn from the grid"),
    "pue": ("ratio", 1.0, 5.0, "power usage effectiveness: facility energy / IT energy"),
    "price_per_kwh": (None, 0.0, 100.0, "price of one kWh, unit <CURRENCY>/kWh, e.g. EUR/kWh"),
}
CSV_COLUMNS = ("name", "value", "unit", "source", "valid_from", "valid_to")
ALWAYS = datetime(1970, 1, 1, tzinfo=UTC)
_PRICE_UNIT = re.compile(r"[A-Z]{3}/kWh")


class FactorError(StorageError, ValueError):
    """A factor that cannot be stored; the message names the field, the value and the fix."""


@dataclass(frozen=True)
class Factor:
    """One factor row: ``value`` in ``unit``, valid from ``valid_from`` (UTC) to ``valid_to`` (UTC, None: open)."""

    name: str
    value: float
    unit: str
    source: str
    valid_from: datetime
    valid_to: datetime | None

    def row(self, recorded_at: datetime) -> dict[str, Any]:
        """Return the ``factors`` row of this factor, recorded at ``recorded_at`` (UTC)."""
        return {"name": self.name, "value": self.value, "unit": self.unit, "source": self.source,
                "valid_from": self.valid_from, "valid_to": self.valid_to, "recorded_at": recorded_at}


def _when(field: str, text: str | None, where: str) -> datetime | None:
    """Return ``text`` (ISO date or date-time; naive means UTC) as a UTC datetime, None when empty."""
    if text is None or not str(text).strip():
        return None
    try:
        value = datetime.fromisoformat(str(text).strip())
    except ValueError:
        raise FactorError(f"{where}{field}={text!r} is not a date: use ISO 8601, e.g. 2026-01-01 or "
                          "2026-01-01T00:00:00+00:00") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_factor(name: str, value: Any, *, unit: str | None = None, source: str | None = None,
                 valid_from: str | None = None, valid_to: str | None = None, where: str = "") -> Factor:
    """Return the validated Factor; ``where`` prefixes messages (e.g. 'factors.csv line 3: ').

    Raises FactorError for an unknown name, a value that is not a finite number in the factor's range, a
    missing source, a wrong unit, an unreadable date or a validity that ends before it starts.
    """
    if name not in FACTORS:
        raise FactorError(f"{where}name={name!r} is not a known factor: use one of {', '.join(FACTORS)}")
    default_unit, low, high, meaning = FACTORS[name]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise FactorError(f"{where}value={value!r} for {name} is not a number: give {meaning}") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise FactorError(f"{where}value={value!r} for {name} is outside [{low:g}, {high:g}]: give {meaning}")
    unit = (unit or "").strip() or default_unit
    if name == "price_per_kwh":
        if unit is None or not _PRICE_UNIT.fullmatch(unit):
            raise FactorError(f"{where}unit={unit!r} for price_per_kwh: give the currency, e.g. --unit EUR/kWh")
    elif unit != default_unit:
        raise FactorError(f"{where}unit={unit!r} for {name}: it is measured in {default_unit}")
    if not source or not str(source).strip():
        raise FactorError(f"{where}source={source!r} for {name}: say where the value comes from (publication, "
                          "tariff, URL), e.g. --source 'Ember 2025, Germany annual mean'")
    start = _when("valid_from", valid_from, where) or ALWAYS
    end = _when("valid_to", valid_to, where)
    if end is not None and end <= start:
        raise FactorError(f"{where}valid_to={valid_to!r} is not after valid_from={start.isoformat()}: the validity "
                          "would be empty")
    return Factor(name, number, str(unit), str(source).strip(), start, end)


def read_factors_csv(path: Path) -> list[Factor]:
    """Return every factor of a CSV with a header naming CSV_COLUMNS (valid_from, valid_to may be empty).

    All rows are validated before any is returned; raises FactorError naming the file, the line, the field
    and the value of the first bad one.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise FactorError(f"{path}: cannot read it ({exc}): give a UTF-8 CSV file") from None
    reader = csv.DictReader(text.splitlines())
    header = reader.fieldnames or []
    missing = [c for c in CSV_COLUMNS if c not in header and c not in ("unit", "valid_from", "valid_to")]
    unknown = [c for c in header if c not in CSV_COLUMNS]
    if missing or unknown:
        raise FactorError(f"{path}: header {header} must name the columns {', '.join(CSV_COLUMNS)} "
                          f"(missing {missing}, unknown {unknown})")
    out = []
    for line, row in enumerate(reader, start=2):
        if not any((v or "").strip() for v in row.values()):
            continue
        out.append(parse_factor((row.get("name") or "").strip(), row.get("value"), unit=row.get("unit"),
                                source=row.get("source"), valid_from=row.get("valid_from"),
                                valid_to=row.get("valid_to"), where=f"{path} line {line}: "))
    if not out:
        raise FactorError(f"{path}: no factor rows below the header")
    return out


def factor_rows(factors: list[Factor], recorded_at: datetime | None = None) -> list[Mapping[str, Any]]:
    """Return the ``factors`` rows of ``factors``, all recorded at ``recorded_at`` (default now, UTC)."""
    now = recorded_at or datetime.now(UTC)
    return [f.row(now) for f in factors]
