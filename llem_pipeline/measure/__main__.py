"""``python -m llem_pipeline.measure``: one measurement as a plain command (see measure/worker.py).

    python -m llem_pipeline.measure --config CFG.json --devices LIST|simulated|auto --out RUN_DIR \\
        [--timeout S] [--run-id ID] [--experiment-id ID] [--baseline-cache PATH] [--sampler MODE] [--quiet]

Exit 0 on success; otherwise one line ``llem-measure: error: <reason>`` on stderr and exit 1 (124 on timeout).
Under Dagster Pipes (DAGSTER_PIPES_CONTEXT set) milestone progress goes to the Dagster log (the rest to stderr) and the headline
figures are reported as a custom message.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import sys
from pathlib import Path
from typing import Any

from llem_pipeline.domain.errors import ConfigError
from llem_pipeline.domain.study import parse_experiment_config
from llem_pipeline.measure.worker import EXIT_TIMEOUT, WorkerError, WorkerTimeout, run_measurement


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llem_pipeline.measure", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, type=Path, help="ExperimentConfig JSON file")
    p.add_argument("--devices", required=True, help="'simulated', 'auto', or NVML UUIDs/indices (comma list)")
    p.add_argument("--out", required=True, type=Path, help="run folder to create (atomically)")
    p.add_argument("--timeout", type=float, default=None, help="kill the engine processes after this many s")
    p.add_argument("--run-id", default=None)
    p.add_argument("--experiment-id", default=None)
    p.add_argument("--baseline-cache", type=Path, default=None, help="idle-power cache file shared across runs")
    p.add_argument("--sampler", choices=("auto", "process", "thread"), default="auto",
                   help="where the power sampler runs: its own process, a thread, or auto (process on NVML GPUs)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


@contextlib.contextmanager
def _pipes():
    """Yield a Dagster Pipes context when launched by Dagster Pipes, else None (dagster_pipes is optional)."""
    if "DAGSTER_PIPES_CONTEXT" not in os.environ:
        yield None
        return
    try:
        from dagster_pipes import open_dagster_pipes
    except ImportError:
        yield None
        return
    with open_dagster_pipes() as pipes:
        yield pipes


def _disk_hint(err: BaseException, out: Path) -> str:
    """Return a hint naming the run folder's location when ``err`` is a full disk / file-size limit, else ''."""
    text = str(err)
    if getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) or any(
            s in text for s in ("No space left on device", "Disk quota exceeded", "File too large")):
        return f" (writing the run folder under {out.parent}: the disk is full or a file-size limit applies; free space or pass another --out)"
    return ""


# Under Pipes each forwarded line becomes a Dagster event: a write to the instance's event log (~3 ms, 20-40 ms
# on a busy disk) that the step process makes while the worker measures. Milestones go there; every other event
# (per-step starts and ends, per-prompt warmup progress: several inside the window) goes to stderr, which the
# guard copies into the step's captured stderr (the run's stderr view in the UI).
DAGSTER_LOG_EVENTS = frozenset({"plan", "baseline", "process_done", "steps", "result", "error"})
DAGSTER_LOG_STEPS = frozenset({"model_load", "warmup"})


def to_dagster_log(event: str, data: dict[str, Any]) -> bool:
    """Return True when the progress event goes to the Dagster log (milestones: the plan, the baseline, model
    load and warmup starting, warmup done, each process done, the step timings, the result, errors)."""
    if event in DAGSTER_LOG_EVENTS:
        return True
    if event == "step_start":
        return data.get("step") in DAGSTER_LOG_STEPS
    if event == "warmup":
        return data.get("done") == data.get("total")
    return False


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit code (0, 1, or 124 on timeout)."""
    args = _parser().parse_args(argv)
    with _pipes() as pipes:
        def progress(event: str, data: dict[str, Any]) -> None:
            line = f"llem-measure: {event} {json.dumps(data, default=str)}"
            if pipes is not None and to_dagster_log(event, data):
                pipes.log.info(line)
            elif not args.quiet:
                print(line, file=sys.stderr, flush=True)

        try:
            try:
                data = json.loads(args.config.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as err:
                raise ConfigError(f"{args.config}: cannot read the config JSON: {err}") from None
            config = parse_experiment_config(data, str(args.config))
            out = run_measurement(config, args.devices, args.out, timeout_s=args.timeout, run_id=args.run_id,
                                  experiment_id=args.experiment_id, baseline_cache=args.baseline_cache,
                                  sampler=args.sampler, on_progress=progress)
        except WorkerTimeout as err:
            print(f"llem-measure: error: {err}", file=sys.stderr)
            return EXIT_TIMEOUT
        except (WorkerError, ConfigError, OSError) as err:
            print(f"llem-measure: error: {' '.join(str(err).split())}{_disk_hint(err, args.out)}", file=sys.stderr)
            return 1
        if pipes is not None:
            result = json.loads((out / "result.json").read_text(encoding="utf-8"))
            pipes.report_custom_message({"run_dir": str(out), "config_hash": result["measurement_config_hash"]})
        return 0


if __name__ == "__main__":
    sys.exit(main())
