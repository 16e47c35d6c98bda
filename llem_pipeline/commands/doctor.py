"""``llem doctor``: is this host ready to make valid energy measurements?

Runs the checks of llem_pipeline/measure/doctor.py (NVML and driver versions, each GPU's persistence
mode, power limit, clocks, ECC, MIG, other processes, energy counter and its update period, instant
power, temperature, clock events; free disk under the data dir; torch) and prints one line per finding:
OK / WARN / FAIL, the check, the device, what was found and the fix. A table on a terminal, plain lines
when piped, a JSON list with ``--format json``. Exit 0 without FAIL, 1 with any FAIL, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from llem_pipeline import paths
from llem_pipeline.measure.doctor import DEFAULT_COUNTER_POLL_S, Finding, exit_code, run_checks, summary

_STYLE = {"OK": "green", "WARN": "yellow", "FAIL": "bold red"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llem doctor",
        description="Check whether this host is ready to make valid energy measurements: NVML, driver, each "
        "GPU's settings and other processes, the energy counter, disk space, torch. Exit 1 when any check FAILs.",
    )
    p.add_argument("--format", choices=("auto", "table", "plain", "json"), default="auto",
                   help="auto (default): a table on a terminal, plain lines when piped; json: a list of "
                   "{status, check, device, found, fix}")
    p.add_argument("--quick", action="store_true",
                   help="skip polling the energy counters for their update period (saves ~1 s)")
    p.add_argument("--poll-s", type=float, default=DEFAULT_COUNTER_POLL_S, metavar="S",
                   help=f"how long to poll the energy counters, all GPUs at once (default {DEFAULT_COUNTER_POLL_S} s)")
    return p


def render_plain(findings: Sequence[Finding], out: TextIO) -> None:
    """Writes one line per finding ('WARN  power_limit [GPU 0]: ... -- fix: ...') and the summary line."""
    for f in findings:
        where = f" [{f.device}]" if f.device else ""
        fix = f" -- fix: {f.fix}" if f.fix else ""
        out.write(f"{f.status:<4}  {f.check}{where}: {f.found}{fix}\n")
    out.write(f"llem doctor: {summary(findings)}\n")


def render_table(findings: Sequence[Finding], out: TextIO) -> None:
    """Writes a rich table of the findings and the summary line; data is never read as rich markup."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(file=out, highlight=False, width=None if out.isatty() else 160)
    table = Table(header_style="bold", show_lines=False)
    for name, kw in (("status", {"no_wrap": True}), ("check", {"no_wrap": True}), ("device", {"no_wrap": True}),
                     ("found", {"overflow": "fold", "ratio": 3}), ("fix", {"overflow": "fold", "ratio": 2})):
        table.add_column(name, **kw)
    for f in findings:
        table.add_row(Text(f.status, style=_STYLE[f.status]), Text(f.check), Text(f.device or ""),
                      Text(f.found), Text(f.fix or ""))
    console.print(table)
    worst = "FAIL" if exit_code(findings) else ("WARN" if any(f.status == "WARN" for f in findings) else "OK")
    console.print(Text(f"llem doctor: {summary(findings)}", style=_STYLE[worst]))


def render_json(findings: Sequence[Finding], out: TextIO) -> None:
    """Writes the findings as a JSON list of {status, check, device, found, fix}."""
    json.dump([f.as_dict() for f in findings], out, indent=1, ensure_ascii=False)
    out.write("\n")


def main_doctor(argv: list[str] | None = None, *, out: TextIO | None = None, **checks: Any) -> int:
    """Runs ``llem doctor``; returns the exit code (0 no FAIL, 1 any FAIL, 2 bad usage).

    ``out``: where to write (default stdout). ``checks``: passed to ``run_checks`` (tests inject ``nvml``,
    ``clock``, ``sleep``, ``import_torch``, ``driver_paths``, ``data_dir``, ``env``).
    """
    args = _parser().parse_args(argv)
    if args.poll_s <= 0 and not args.quick:
        print("llem doctor: --poll-s must be > 0 (or use --quick)", file=sys.stderr)
        return 2
    out = out or sys.stdout
    fmt = args.format
    if fmt == "auto":
        fmt = "table" if out.isatty() else "plain"
    checks.setdefault("data_dir", paths.data_dir)
    checks.setdefault("counter_poll_s", None if args.quick else args.poll_s)
    if fmt == "table" and out.isatty():
        from rich.console import Console

        with Console(stderr=True).status("llem doctor: checking NVML, the GPUs, disk and torch ..."):
            findings = run_checks(**checks)
    else:
        findings = run_checks(**checks)
    try:
        {"table": render_table, "plain": render_plain, "json": render_json}[fmt](findings, out)
        out.flush()
    except BrokenPipeError:  # `llem doctor | head`: the reader left; silence the flush at interpreter exit
        if out is sys.stdout:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return exit_code(findings)
