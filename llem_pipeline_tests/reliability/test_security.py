"""Security (reliability case 4): the webserver binds loopback, no SQL is built by pasting user values,
snapshots keep no secrets, trust_remote_code is off by default, output paths cannot leave the data dir.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import re
import socket
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from llem_pipeline.domain import compute_measurement_config_hash
from llem_pipeline.domain.config import ExperimentConfig
from llem_pipeline.storage import ResultStore, RunRecord
from llem_pipeline.storage.errors import ReadOnlyViolation, StorageError
from llem_pipeline.storage.schema import TABLES
from llem_pipeline.storage.sql_cli import main_sql
from llem_pipeline_tests.reliability.support import (
    PROJECT_ROOT,
    TINY_CONFIG,
    CaseResult,
    count_tracebacks,
    run_worker,
)
from llem_pipeline_tests.storage.record_factory import make_config, make_record, record_from_run_folder

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


# -- 1. the webserver binds loopback -----------------------------------------------------------------
LAUNCHERS = ["Makefile", "scripts/dagster_ui.sh", "llem_pipeline_tests/e2e/dagster_server.py", "workspace.yaml",
             "README.md"]
# a launch: `dagster dev -w …` / `"$DAGSTER" dev -w …` / `[str(dagster), "dev", "-w", …]` / dagster-webserver
_DEV = re.compile(r"""\bdev["']?,?\s+["']?-w\b|dagster-webserver\s""")
_HOST = re.compile(r"(?:-h|--host)[\"']?,?\s*[\"']?([0-9A-Za-z.:\[\]_$-]+)")


def launcher_hosts() -> list[tuple[str, int, str, str | None]]:
    """Return (file, line number, line, host or None when the default) for every webserver launch line."""
    found = []
    for rel in LAUNCHERS:
        path = PROJECT_ROOT / rel
        if not path.is_file():
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.lstrip().startswith("#"):
                continue
            if _DEV.search(line):
                m = _HOST.search(line)
                found.append((rel, i, line.strip(), m.group(1) if m else None))
            elif "0.0.0.0" in line or "--host ::" in line:
                found.append((rel, i, line.strip(), "0.0.0.0"))
    return found


def webserver_binds_loopback(live: bool) -> CaseResult:
    """Every `dagster dev` launch line passes -h 127.0.0.1 (the `dagster dev` default is also 127.0.0.1);
    nothing binds 0.0.0.0. ``live``: start the UI with scripts/dagster_ui.sh and read its listening sockets."""
    res = CaseResult("webserver binds 127.0.0.1")
    lines = launcher_hosts()
    for rel, i, line, host in lines:
        res.record(host is None or host in LOOPBACK, f"{rel}:{i} binds {host}: {line}")
    res.record(bool(lines), "no webserver launch line found in the launchers")
    if live:
        res.record(*_live_ui_bind())
    return res


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _live_ui_bind() -> tuple[bool, str]:
    import tempfile

    import psutil

    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="llem-ui-") as tmp:
        env = {**os.environ, "DAGSTER_HOME": tmp, "LLEM_UI_PORT": str(port), "LLEM_DEVICES": "simulated",
               "LLEM_DATA_DIR": str(Path(tmp) / "data"), "LLEM_UI_STOP_TIMEOUT_S": "2"}
        script = str(PROJECT_ROOT / "scripts" / "dagster_ui.sh")
        start = subprocess.run(["bash", script, "start"], capture_output=True, text=True, env=env, timeout=200)
        try:
            ips = sorted({c.laddr.ip for c in psutil.net_connections(kind="inet")
                          if c.status == psutil.CONN_LISTEN and c.laddr.port == port})
        finally:
            subprocess.run(["bash", script, "stop"], capture_output=True, text=True, env=env, timeout=120)
    ok = start.returncode == 0 and bool(ips) and set(ips) <= {"127.0.0.1", "::1"}
    return ok, f"live UI on port {port}: start rc {start.returncode} {start.stderr.strip()[-200:]}; listening on {ips}"


# -- 2. no SQL built from user values -------------------------------------------------------------
INJECTIONS = [
    "x'; DROP TABLE experiment_results; --",
    "' OR '1'='1",
    "\"; DELETE FROM power_samples; --",
    "x') ; ATTACH '/tmp/evil.duckdb' AS evil; --",
    "Robert'); COPY experiment_results TO '/tmp/leak.csv'; --",
]
# Every {…} in SQL text must be one of these: table/view names from the schema allow-lists, the staging
# name, ORDER BY / WHERE fragments that are literals in the code.
SQL_INTERPOLATIONS = {"name", "_STAGING", "t", "view", "order"}


def sql_interpolations() -> list[tuple[str, int, str]]:
    """Return (file, line, expression) of every interpolation into SQL text passed to execute/sql/query,
    and of every ``.format(...)`` argument that is not a string literal."""
    found = []
    for path in sorted((PROJECT_ROOT / "llem_pipeline").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in {"execute", "sql", "query", "executemany"} and node.args):
                continue
            arg = node.args[0]
            rel = str(path.relative_to(PROJECT_ROOT))
            if isinstance(arg, ast.JoinedStr):
                found += [(rel, arg.lineno, ast.unparse(v.value)) for v in arg.values if isinstance(v, ast.FormattedValue)]
            elif isinstance(arg, ast.Call) and isinstance(arg.func, ast.Attribute) and arg.func.attr == "format":
                found += [(rel, arg.lineno, ast.unparse(v)) for v in [*arg.args, *(k.value for k in arg.keywords)]
                          if not isinstance(v, ast.Constant)]
    return found


def no_sql_injection(data_dir: Path) -> CaseResult:
    """Injection attempts through config fields, study names, run ids, table names and `llem sql`; the
    tables survive, values are stored verbatim, and SQL text only interpolates allow-listed identifiers."""
    res = CaseResult("no SQL injection")
    for rel, line, expr in sql_interpolations():
        res.record(expr in SQL_INTERPOLATIONS, f"{rel}:{line} interpolates {expr!r} into SQL text")
    store = ResultStore(data_dir / "llem.duckdb", lock_timeout_s=30)
    store.ensure_schema()
    for i, payload in enumerate(INJECTIONS):
        config = make_config(model=payload, batch_size=i + 1)
        h = compute_measurement_config_hash(config)
        store.upsert_configs(payload, {h: config})  # the study name as given by a caller (the store checks length only)
        record = make_record(config, run_id=f"inj-{i}")
        store.write_run(make_record(config, run_id=f"inj-{i}", study=payload))
        got = store.query("SELECT model, study FROM experiment_results WHERE config_hash = ?", [h]).to_pylist()
        res.record(got == [{"model": payload, "study": payload}], f"payload {payload!r} stored as {got}")
        fields = {f: getattr(record, f) for f in record.__dataclass_fields__}
        for bad in ({"run_id": payload}, {"config_hash": payload}, {"run_date": payload}, {"hardware_id": payload},
                    {"label": payload + "\n"}):
            try:
                store.write_run(RunRecord(**{**fields, **bad}))
                res.record(False, f"RunRecord accepted {bad}")
            except StorageError:
                res.record(True)
        try:
            store.read_run(f"experiment_results; DROP TABLE requests; --{i}", f"inj-{i}")
            res.record(False, "read_run accepted a table name outside the allow-list")
        except (StorageError, ValueError):
            res.record(True)
    # `llem sql`: statements other than one SELECT are refused, --param values are bound, files are out of reach
    leak = data_dir / "leak.csv"
    cli_cases = [
        (["DROP TABLE experiment_results"], 2),
        (["SELECT 1; DROP TABLE experiment_results"], 2),
        ([f"COPY experiment_results TO '{leak}'"], 2),
        ([f"ATTACH '{data_dir / 'evil.duckdb'}' AS evil"], 2),
        (["SELECT * FROM read_csv('/etc/passwd')"], 1),
        (["SELECT count(*) AS n FROM experiment_results WHERE model = ?", "--param", INJECTIONS[1], "--format", "json"], 0),
    ]
    for argv, want in cli_cases:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main_sql([*argv, "--db", str(store.path), "--timeout", "10"])
        ok = rc == want and (want != 0 or json.loads(out.getvalue()) == [{"n": 1}])
        res.record(ok, f"llem sql {argv}: rc {rc} (want {want}), out {out.getvalue()[:120]!r}, err {err.getvalue()[:160]!r}")
    counts = store.row_counts()
    res.record(counts["experiment_results"] == len(INJECTIONS) and counts["requests"] == 8 * len(INJECTIONS)
               and not leak.exists() and not (data_dir / "evil.duckdb").exists(),
               f"tables after the attempts: {counts}; leak file {leak.exists()}")
    try:
        store.query("DELETE FROM experiment_results")
        res.record(False, "ResultStore.query ran a DELETE")
    except ReadOnlyViolation:
        res.record(True)
    return res


# -- 3. snapshots keep no secrets -----------------------------------------------------------------
FAKE_SECRETS = {
    "HF_TOKEN": "hf_FAKEfakeFAKEfake0123456789abcdef",
    "AWS_SECRET_ACCESS_KEY": "wJalrFAKEXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "GITHUB_TOKEN": "ghp_FAKE0123456789abcdefghijklmnopqrstuv",
    "OPENAI_API_KEY": "sk-FAKEproj0123456789abcdefghijklmnop",
    "DATABASE_URL": "postgres://llemuser:FAKEpassw0rd@db.internal:5432/llem",
    "VLLM_API_KEY": "vllm-FAKE-key-0123456789",
    "NCCL_SOCKET_IFNAME": "eyJhbGciOiJIUzI1NiJ9.FAKEpayload.FAKEsig",  # allow-listed prefix, secret-looking value
    "MY_APP_SETTING": "canary-not-allow-listed-7f3e1d",  # neither allow-listed nor secret-looking
}
SECRET_NEEDLES = [*FAKE_SECRETS.values(), "FAKEpassw0rd", "FAKEfakeFAKEfake"]


def _texts_of_run_folder(folder: Path) -> dict[str, bytes]:
    """Return every file's raw bytes plus, for Parquet files, the decoded rows as text."""
    out: dict[str, bytes] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            out[p.name] = p.read_bytes()
            if p.suffix == ".parquet":
                table = pq.read_table(p)
                # ns timestamps become ints: to_pylist() of them needs pandas, which the dev install lacks
                cols = {n: (c.cast(pa.int64()) if pa.types.is_timestamp(c.type) else c)
                        for n, c in zip(table.column_names, table.columns, strict=True)}
                out[p.name + " (rows)"] = str(pa.table(cols).to_pylist()).encode()
    return out


def snapshots_keep_no_secrets(data_dir: Path) -> CaseResult:
    """A real worker run with fake secrets in its environment: no file of the run folder and no DuckDB row
    holds any of them (nor a variable outside the allow-list); the allow-listed CUDA_VISIBLE_DEVICES is kept."""
    res = CaseResult("no secrets in snapshots")
    day = datetime.now(UTC).date().isoformat()
    h = compute_measurement_config_hash(ExperimentConfig.model_validate(TINY_CONFIG))
    out = data_dir / "runs" / day / h / "secrets-run"
    proc = run_worker(data_dir, TINY_CONFIG, out, env_extra={**FAKE_SECRETS, "CUDA_VISIBLE_DEVICES": "0"})
    res.record(proc.returncode == 0, f"worker failed: {proc.stderr.strip()[-300:]}", unhandled=count_tracebacks(proc.stderr))
    if proc.returncode != 0:
        return res
    for name, blob in _texts_of_run_folder(out).items():
        hits = [n for n in SECRET_NEEDLES if n.encode() in blob]
        res.record(not hits, f"{name} holds {hits}")
    env = json.loads((out / "environment.json").read_text())
    res.record(env.get("relevant_env", {}).get("CUDA_VISIBLE_DEVICES") == "0",
               f"allow-listed CUDA_VISIBLE_DEVICES not recorded: {env.get('relevant_env')}")
    store = ResultStore(data_dir / "llem.duckdb", lock_timeout_s=30)
    store.write_run(record_from_run_folder(out, run_date=day))
    for table in TABLES:
        text = str(store.query(f"SELECT * FROM {table}").to_pylist())
        hits = [n for n in SECRET_NEEDLES if n in text]
        res.record(not hits, f"DuckDB table {table} holds {hits}")
    blob = store.path.read_bytes()
    hits = [n for n in SECRET_NEEDLES if n.encode() in blob]
    res.record(not hits, f"the DuckDB file holds {hits}")
    return res


# -- 4. trust_remote_code off by default ---------------------------------------------------------
def trust_remote_code_off(model_dir: Path, work: Path) -> CaseResult:
    """Defaults are False in every engine section, and a local model whose config asks for custom code
    (auto_map → a module that would drop a marker file) is refused by the loaders without running it."""
    import shutil

    from llem_pipeline.engines.model_files import load_tokenizer, meta_model

    res = CaseResult("trust_remote_code off by default")
    cfg = ExperimentConfig.model_validate({"model": "x"})
    vcfg = ExperimentConfig.model_validate({"model": "x", "backend": "vllm"})
    res.record(cfg.pytorch is not None and cfg.pytorch.trust_remote_code is False, f"pytorch default {cfg.pytorch}")
    res.record(vcfg.vllm is not None and vcfg.vllm.trust_remote_code is False, f"vllm default {vcfg.vllm}")
    evil = work / "evil-model"
    shutil.copytree(model_dir, evil)
    marker = work / "REMOTE_CODE_RAN"
    (evil / "evil_code.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        "class EvilConfig(LlamaConfig):\n    model_type = 'llama'\n"
        "class EvilModel(LlamaForCausalLM):\n    config_class = EvilConfig\n")
    conf = json.loads((evil / "config.json").read_text())
    conf["auto_map"] = {"AutoConfig": "evil_code.EvilConfig", "AutoModelForCausalLM": "evil_code.EvilModel"}
    (evil / "config.json").write_text(json.dumps(conf))
    for name, load in (("meta_model", lambda: meta_model(str(evil))), ("load_tokenizer", lambda: load_tokenizer(str(evil)))):
        try:
            load()
            loaded = True
        except Exception:
            loaded = False
        res.record(not marker.exists(), f"{name} ran the model's custom code (loaded: {loaded})")
    return res


# -- 5. output paths stay inside the data dir -----------------------------------------------------
ESCAPES = ["..", "../..", "../../etc", "/etc", "a/../../b", "a/b", "~root", "x\x00y", ".", "", " ", "..\\..", "%2e%2e"]


def paths_stay_inside(data_dir: Path, outside: Path, examples: int) -> CaseResult:
    """run_folder_path refuses parts that could escape the runs root (fuzzed); the run-folder reader refuses a
    folder whose files link outside it. (The storage layer takes RunRecords and never reads run folders.)"""
    from llem_pipeline.measure.run_folder import RunFolder, RunFolderError, run_folder_path

    res = CaseResult("output paths stay inside the data dir")
    root = (data_dir / "runs").resolve()
    root.mkdir(parents=True, exist_ok=True)
    for part in ESCAPES:
        for args in ((part, "0123456789abcdef", "r1"), ("2026-11-01", part, "r1"), ("2026-11-01", "0123456789abcdef", part)):
            try:
                p = run_folder_path(root, *args)
                res.record(p.resolve().is_relative_to(root), f"run_folder_path{args} = {p}")
            except RunFolderError:
                res.record(True)

    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(st.text(max_size=20), st.text(max_size=20), st.text(max_size=70))
    def fuzz(day, h, run_id):
        try:
            p = run_folder_path(root, day, h, run_id)
        except RunFolderError:
            res.record(True)
            return
        res.record(p.resolve().is_relative_to(root) and p.parent.parent.parent == root, f"run_folder_path -> {p}")

    fuzz()
    folder = run_folder_path(root, "2026-11-01", "0123456789abcdef", "r-link")
    folder.mkdir(parents=True)
    (outside / "result.json").write_text("{}", encoding="utf-8")
    (folder / "result.json").symlink_to(outside / "result.json")
    try:
        RunFolder.open(root, "2026-11-01", "0123456789abcdef", "r-link")
        res.record(False, "the reader accepted a result.json linked from outside the runs folder")
    except RunFolderError as err:
        res.record("outside the runs folder" in str(err), f"wrong refusal: {err}")
    return res


# -- tests ------------------------------------------------------------------------------------------
def test_webserver_launchers_bind_loopback():
    res = webserver_binds_loopback(live=False)
    assert res.ok, res.explain()


@pytest.mark.slow
def test_live_webserver_listens_on_loopback_only():
    ok, note = _live_ui_bind()
    assert ok, note


def test_no_sql_injection(tmp_path):
    res = no_sql_injection(tmp_path)
    assert res.ok, res.explain()


@pytest.mark.slow
def test_snapshots_keep_no_secrets(tmp_path):
    res = snapshots_keep_no_secrets(tmp_path)
    assert res.ok, res.explain()


def test_trust_remote_code_is_off_by_default(tiny_model_dir, tmp_path):
    res = trust_remote_code_off(tiny_model_dir, tmp_path)
    assert res.ok, res.explain()


def test_output_paths_stay_inside_the_data_dir(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "outside").mkdir()
    res = paths_stay_inside(tmp_path / "data", tmp_path / "outside", examples=200)
    assert res.ok, res.explain()
