"""Shared pieces of the fault-injection suite: the outcome of a case, the worker command as a
subprocess, and honest small / read-only filesystems.

Every case function in ``test_*.py`` returns a ``CaseResult``; the tests run them scaled down and assert
``ok``, ``bench/reliability.py`` runs them full size and prints the table.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TRACEBACK = "Traceback (most recent call last)"

# A small real measurement: the tiny Llama on the activity-driven simulated GPU (about 10 s on 2 cores).
TINY_CONFIG = {
    "model": "llem:tiny", "n": 4, "max_input_tokens": 32, "max_output_tokens": 6, "precision": "fp32",
    "warmup": {"n_warmup": 1, "thermal_floor_seconds": 0}, "baseline": {"enabled": False},
    "energy": {"sample_interval_ms": 50}, "pytorch": {"batch_size": 4},
}
# Long enough to be killed in the middle of its run step (64 requests of 64 tokens, one at a time).
SLOW_CONFIG = {**TINY_CONFIG, "n": 64, "max_output_tokens": 64, "pytorch": {"batch_size": 1}}


@dataclass
class CaseResult:
    """One row of the reliability table.

    ``tried``: injections made; ``survived``: those after which the system did the right thing (a correct,
    flagged result, or a clear one-line error with nothing written); ``rows_lost``: rows that should be
    stored but are not, or rows stored half / twice; ``unhandled``: tracebacks or exceptions of an
    unexpected type that escaped. ``notes``: what went wrong, per failed try (empty when all survived).
    """

    case: str
    tried: int = 0
    survived: int = 0
    rows_lost: int = 0
    unhandled: int = 0
    notes: list[str] = field(default_factory=list)

    def record(self, ok: bool, note: str = "", *, unhandled: int = 0, rows_lost: int = 0) -> None:
        """Count one try: ``ok`` when it survived; ``note`` says why not."""
        self.tried += 1
        self.survived += int(ok)
        self.unhandled += unhandled
        self.rows_lost += rows_lost
        if not ok and note:
            self.notes.append(note)

    @property
    def ok(self) -> bool:
        """True when every try survived with nothing lost and no unhandled traceback."""
        return self.tried > 0 and self.survived == self.tried and self.rows_lost == 0 and self.unhandled == 0

    def explain(self) -> str:
        """Return a one-paragraph summary for assertion messages."""
        return (f"{self.case}: tried {self.tried}, survived {self.survived}, rows lost {self.rows_lost}, "
                f"unhandled {self.unhandled}; " + " | ".join(self.notes[:5]))


def count_tracebacks(text: str) -> int:
    """Return how many Python tracebacks ``text`` holds."""
    return text.count(TRACEBACK)


def worker_env(data_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Return the environment for a worker subprocess with LLEM_DATA_DIR=data_dir (offline HF)."""
    return {**os.environ, "LLEM_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false", **(extra or {})}


def worker_cmd(config_path: Path, out: Path, *extra: str) -> list[str]:
    """Return the argv of ``python -m llem_pipeline.measure`` on the simulated device."""
    return [sys.executable, "-m", "llem_pipeline.measure", "--config", str(config_path), "--devices", "simulated",
            "--out", str(out), "--quiet", *extra]


def write_config(data_dir: Path, config: dict) -> Path:
    """Write ``config`` as JSON under ``<data_dir>/configs/`` (never beside the run folder); returns the path."""
    folder = data_dir / "configs"
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="cfg-", suffix=".json", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(config, fh)
    return Path(name)


def run_worker(data_dir: Path, config: dict, out: Path, *extra: str, env_extra: dict[str, str] | None = None,
               fsize_limit: int | None = None, timeout_s: float = 300) -> subprocess.CompletedProcess:
    """Run the worker command to completion; returns the CompletedProcess (text stdout/stderr).

    ``fsize_limit``: RLIMIT_FSIZE for the worker and its engine processes, bytes (writes beyond it fail
    with EFBIG: Python ignores SIGXFSZ).
    """
    cfg = write_config(data_dir, config)

    def limit() -> None:
        if fsize_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_limit, fsize_limit))

    return subprocess.run(worker_cmd(cfg, out, *extra), capture_output=True, text=True,
                          env=worker_env(data_dir, env_extra), timeout=timeout_s, cwd=PROJECT_ROOT,
                          preexec_fn=limit if fsize_limit is not None else None)


def one_line_error(proc: subprocess.CompletedProcess) -> str | None:
    """Return the worker's ``llem-measure: error: ...`` line when stderr is exactly that one line, else None."""
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    if len(lines) == 1 and lines[0].startswith("llem-measure: error: "):
        return lines[0]
    return None


def leftovers(out: Path) -> list[str]:
    """Return what a failed run left beside/at ``out`` (the folder itself or its temp folders)."""
    found = [p.name for p in out.parent.glob(f".{out.name}.tmp-*")]
    if out.exists():
        found.append(out.name)
    return found


def _can_mount() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and sys.platform.startswith("linux")


@contextlib.contextmanager
def small_filesystem(path: Path, size_bytes: int) -> Iterator[str]:
    """Yield how "disk full" is simulated at ``path`` (created): a tmpfs of ``size_bytes`` mounted there
    ('tmpfs') when this process may mount, else nothing is mounted and the caller must pass
    ``fsize_limit=size_bytes`` to the worker ('rlimit'). The mount is removed afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = False
    if _can_mount():
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path)],
                           capture_output=True, text=True)
        mounted = r.returncode == 0
    try:
        yield "tmpfs" if mounted else "rlimit"
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def unwritable_dir(path: Path) -> Iterator[str]:
    """Yield how ``path`` (created) was made unwritable: a read-only tmpfs mounted there ('ro-mount') as root,
    mode 0555 ('chmod') for other users, or, as root without mount rights, a regular file in its place
    ('file': nothing can be created under it)."""
    path.mkdir(parents=True, exist_ok=True)
    how = "chmod"
    if _can_mount():
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)], capture_output=True)
        how = "ro-mount" if r.returncode == 0 else "file"
    if how == "chmod":
        path.chmod(0o555)
    elif how == "file":
        path.rmdir()
        path.write_text("not a directory\n")
    try:
        yield how
    finally:
        if how == "ro-mount":
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
        elif how == "chmod":
            path.chmod(0o755)
        elif how == "file":
            path.unlink()
            path.mkdir()
