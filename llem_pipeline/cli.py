"""The ``llem`` command: a dispatcher over subcommands, each a ``main_*(argv) -> int`` function in its own module.

Add a subcommand by adding one entry to ``COMMANDS``; its module is imported only when the subcommand
runs, so ``llem make-model`` never imports Dagster or DuckDB. A reader that stops early (``llem -h | head -3``,
``llem sql ... | head -1``) ends the command quietly with exit status 141 (128 + SIGPIPE, what a shell
reports for a tool killed by the closed pipe), never with a traceback.
"""

from __future__ import annotations

import importlib
import sys

from llem_pipeline.closed_pipe import quiet_on_closed_pipe

# name -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "doctor": (
        "llem_pipeline.commands.doctor",
        "main_doctor",
        "check whether this host can make valid measurements (NVML, GPU settings, other processes, counter, disk)",
    ),
    "factors": (
        "llem_pipeline.commands.factors",
        "main_factors",
        "record the carbon / PUE / price factors the carbon_cost view uses (set, import CSV, list)",
    ),
    "make-model": (
        "llem_pipeline.engines.tiny_model",
        "main_make_model",
        "build a random-weight Llama-style model + BPE tokenizer offline (presets tiny, small, 1b, 8b)",
    ),
    "report": (
        "llem_pipeline.commands.report",
        "main_report",
        "the efficiency view: J/token with its CI, tok/s, W, TTFT per config x hardware, with workload and n_runs",
    ),
    "run": (
        "llem_pipeline.commands.run",
        "main_run",
        "measure a study through Dagster (the run queue when a daemon runs, else in this process)",
    ),
    "ui": (
        "llem_pipeline.commands.ui",
        "main_ui",
        "the Dagster UI and daemon (dg dev) on 127.0.0.1; Ctrl-C stops both",
    ),
    "status": (
        "llem_pipeline.commands.status",
        "main_status",
        "recent runs and their state, the run queue and whether a daemon is running",
    ),
    "sql": (
        "llem_pipeline.storage.sql_cli",
        "main_sql",
        "run one read-only SELECT against the results DuckDB file (retries while a write runs)",
    ),
}


def usage() -> str:
    """Return the top-level help text listing the subcommands."""
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: llem <command> [args...]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, _, help_) in sorted(COMMANDS.items())]
    lines += ["", "Run `llem <command> --help` for the command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run ``llem <command> ...``; return the process exit code (0 ok, 2 usage error, 141 stdout closed early)."""
    return quiet_on_closed_pipe(lambda: _dispatch(argv))


def _dispatch(argv: list[str] | None) -> int:
    """Run the subcommand named in ``argv`` (default sys.argv[1:]); return its exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"llem: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, function, _ = COMMANDS[name]
    return int(getattr(importlib.import_module(module), function)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
