"""``llem ui [--port N]``: the Dagster UI and daemon (``dg dev``) on 127.0.0.1 for this checkout's instance.

Runs ``dg dev`` (webserver + daemon: run queue, schedule, sensors) bound to 127.0.0.1 with DAGSTER_HOME
(default ``<checkout>/.dagster_home``), prints the URL once the webserver answers, and on Ctrl-C stops
everything it started: SIGINT to its process group, SIGTERM after a grace, SIGKILL after another (``dg dev``
can ignore SIGTERM). Nothing else is signalled.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from llem_pipeline.paths import PROJECT_ROOT

STOP_GRACE_S = 20.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llem ui", description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=int(os.environ.get("UI_PORT", "3000")), help="webserver port (3000)")
    return p


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def stop_group(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> int:
    """Stop the process group of ``proc`` (SIGINT, then SIGTERM, then SIGKILL, ``grace_s`` s apart); return
    the exit code of ``proc``."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            return proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()


def main_ui(argv: list[str] | None = None) -> int:
    """Run ``llem ui``; return dg dev's exit code (0 after Ctrl-C), 2 when LLEM_DEVICES is unset."""
    args = _parser().parse_args(argv)
    if not os.environ.get("LLEM_DEVICES", "").strip():
        print("llem ui: error: LLEM_DEVICES is not set: use 'simulated' without GPUs, 'auto' or '0,1' with GPUs",
              file=sys.stderr)
        return 2
    env = {**os.environ, "DAGSTER_HOME": os.environ.get("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster_home"))}
    Path(env["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    dg = Path(sys.executable).with_name("dg")
    proc = subprocess.Popen([str(dg), "dev", "-h", "127.0.0.1", "-p", str(args.port), "--use-active-venv"],
                            cwd=PROJECT_ROOT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{args.port}"
    try:
        while proc.poll() is None and not _answers(url):
            time.sleep(0.5)
        if proc.poll() is None:
            print(f"Dagster UI: {url}  (DAGSTER_HOME={env['DAGSTER_HOME']}; Ctrl-C stops it)", flush=True)
        return proc.wait()
    except KeyboardInterrupt:
        print("\nstopping the Dagster UI and daemon…", file=sys.stderr, flush=True)
        stop_group(proc)
        return 0
