"""MeasurementWorker: how the GPU step launches ``python -m llem_pipeline.measure`` (the WORKER contract).

The command runs under the guard (hard wall-clock limit, process-group kill) through Dagster Pipes.
``python`` may name another interpreter (e.g. a GPU venv with vLLM) that has llem_pipeline installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import dagster as dg
from pydantic import Field

ERROR_PREFIX = "llem-measure: error:"
# guard.py imports only the stdlib, so any Python 3 (also another venv's ``python``) can run it by path
GUARD_SCRIPT = str(Path(__file__).with_name("guard.py"))


class MeasurementWorker(dg.ConfigurableResource):
    """Settings of the measurement subprocess."""

    python: str = Field(default="", description="Interpreter running the worker; '' = the one running Dagster")
    timeout_s: int = Field(default=3600, gt=0, description="Worker --timeout: engine processes are killed after it, s")
    hard_timeout_margin_s: float = Field(
        default=120.0, ge=0, description="The guard kills the whole process group this long after timeout_s, s"
    )
    kill_grace_s: float = Field(default=30.0, ge=0, description="SIGTERM → SIGKILL grace of the guard, s")
    use_baseline_cache: bool = Field(default=True, description="Reuse idle power per GPU UUID within its TTL")
    simulated_model: str = Field(
        default="", description="Product name of the simulated GPU on this host (LLEM_SIM_GPU_MODEL, e.g. "
        "'H100-SXM5-80GB'; hardware_id 'simulated:<model>:x1'); '' = 'sim-gpu'",
    )
    sampler: str = Field(
        default="auto", pattern="^(auto|process|thread)$",
        description="Where the power sampler runs: 'process' (its own process), 'thread', or 'auto' (LLEM_SAMPLER)",
    )

    def env(self) -> dict[str, str]:
        """Return the environment variables the worker command needs besides the GPU pinning."""
        return {"LLEM_SIM_GPU_MODEL": self.simulated_model} if self.simulated_model else {}

    def interpreter(self) -> str:
        """Return the Python executable that runs the worker."""
        return self.python or sys.executable

    def command(
        self, *, config_path: Path, devices: str, out_dir: Path, run_id: str, experiment_id: str, stderr_log: Path,
        baseline_cache: Path | None = None,
    ) -> list[str]:
        """Return the guarded worker command line (argv list); ``baseline_cache`` is the idle-power cache file
        (used unless ``use_baseline_cache`` is off)."""
        worker = [
            self.interpreter(), "-m", "llem_pipeline.measure",
            "--config", str(config_path),
            "--devices", devices,
            "--out", str(out_dir),
            "--timeout", f"{self.timeout_s:g}",
            "--run-id", run_id,
            "--experiment-id", experiment_id,
        ]
        if self.use_baseline_cache and baseline_cache is not None:
            worker += ["--baseline-cache", str(baseline_cache)]
        if self.sampler != "auto":
            worker += ["--sampler", self.sampler]
        return [
            # the guard by file path, isolated and without site: it only needs the stdlib and starts in ~20 ms
            self.interpreter(), "-I", "-S", GUARD_SCRIPT,
            "--timeout", f"{self.timeout_s + self.hard_timeout_margin_s:g}",
            "--grace", f"{self.kill_grace_s:g}",
            "--stderr-log", str(stderr_log),
            "--", *worker,
        ]


def worker_error(stderr_log: Path) -> str | None:
    """Return the worker's last ``llem-measure: error: ...`` line from the stderr copy, or None."""
    if not stderr_log.is_file():
        return None
    lines = [ln.strip() for ln in stderr_log.read_text(encoding="utf-8", errors="replace").splitlines()]
    errors = [ln for ln in lines if ln.startswith(ERROR_PREFIX) or ln.startswith("llem-guard:")]
    return errors[-1] if errors else (lines[-1] if lines else None)
