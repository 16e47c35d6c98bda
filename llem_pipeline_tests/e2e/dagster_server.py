"""Start and stop `dg dev` (webserver + daemon, what `make ui` runs) on 127.0.0.1 for end-to-end tests.

``stop`` sends SIGINT, then SIGTERM, then SIGKILL to the process group it started (`dg dev` can ignore
SIGTERM), a timeout apart. Nothing else is signalled.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from llem_pipeline.paths import PROJECT_ROOT

LOCATION = "llem_pipeline"


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class DagsterDevServer:
    """A `dagster dev` process group with its own DAGSTER_HOME and llem data dir."""

    home: Path
    data_dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Return the base URL, e.g. http://127.0.0.1:PORT."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """Return the server log file."""
        return self.home / "dagster-dev.log"

    def env(self) -> dict[str, str]:
        """Return the environment of the server (and of everything it launches)."""
        return {
            **os.environ,
            "DAGSTER_HOME": str(self.home),
            "LLEM_DATA_DIR": str(self.data_dir),
            "LLEM_DUCKDB": str(self.data_dir / "llem.duckdb"),
            "LLEM_STUDIES_DIR": str(PROJECT_ROOT / "studies"),
            "LLEM_DEVICES": "simulated",
        }

    def start(self, timeout_s: float = 300.0) -> None:
        """Start the server and wait until the code location is loaded; raises RuntimeError with the log tail.

        Returns as soon as the location is loaded (about 20 s on 2 quiet cores); ``timeout_s`` only turns a server
        that never comes up into an error, and is set so that a loaded machine never reaches it.
        """
        self.home.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROJECT_ROOT / ".dagster_home" / "dagster.yaml", self.home / "dagster.yaml")
        dg = Path(sys.executable).with_name("dg")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(dg), "dev", "-h", "127.0.0.1", "-p", str(self.port), "--use-active-venv"],
                cwd=PROJECT_ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dagster dev exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.location_loaded():
                return
            time.sleep(0.5)
        raise RuntimeError(f"dagster dev did not load {LOCATION} within {timeout_s:.0f} s:\n{self.log_tail()}")

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        """POST a GraphQL query; returns the 'data' object."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        req = urllib.request.Request(f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())["data"]

    def location_loaded(self) -> bool:
        """Return True once the webserver answers and the llem_pipeline location is LOADED."""
        try:
            data = self.graphql(
                "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"
            )
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError, KeyError):
            return False
        entries = (data.get("workspaceOrError") or {}).get("locationEntries") or []
        return any(e["name"] == LOCATION and e["loadStatus"] == "LOADED" for e in entries)

    def log_tail(self, lines: int = 40) -> str:
        """Return the last lines of the server log."""
        if not self.log_path.is_file():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGINT the server's process group, then SIGTERM, then SIGKILL, ``timeout_s`` seconds apart."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                try:
                    os.killpg(pgid, 0)
                except ProcessLookupError:
                    self.proc.wait(timeout=5)
                    return
                time.sleep(0.2)
        self.proc.wait(timeout=5)
