"""A local fleet end to end: Redis and Postgres from Debian's packages, three Celery GPU hosts on two hardware
targets (h100 ×2, a100 ×1, each a different simulated GPU model), the storage worker and the daemon.

The cases run in order on one fleet (starting it costs about a minute on a 2-core machine):
both targets' results land with their own hardware_id; a GPU worker killed mid-measurement is retried once
on the other h100 host; with the storage worker down a run waits and completes when it returns; a Redis
restart loses no run; the store then holds exactly one result per successful run and its audit is clean;
a GPU host pinned to a CPU runs there (its pool process too), one pinned to a CPU it may not use is refused;
stopping the fleet leaves no process and no port behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import psutil
import pytest

from llem_pipeline.fleet.local import FleetError, GpuHost, LocalFleet, port_open
from llem_pipeline.storage import ResultStore

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

HOSTS = (GpuHost("h100-1", "h100", "H100-SXM5-80GB"), GpuHost("h100-2", "h100", "H100-SXM5-80GB"),
         GpuHost("a100-1", "a100", "A100-SXM4-40GB"))
HARDWARE = {"h100": "simulated:H100-SXM5-80GB:x1", "a100": "simulated:A100-SXM4-40GB:x1"}
# Bounds on waiting for the fleet, s: generous because runs start Python processes on a loaded 2-core box;
# they only bound a hang, no test depends on the speed.
RUN_TIMEOUT_S = 900.0
EVENT_TIMEOUT_S = 600.0

STUDY = """
name: {name}
hardware: {hardware}
base:
  model: "llem:tiny"
  backend: pytorch
  n: {n}
  dataset: builtin
  max_input_tokens: 32
  max_output_tokens: {tokens}
  fixed_output_length: true
  precision: fp32
  random_seed: 42
  warmup: {{mode: fixed, n_warmup: 1, thermal_floor_seconds: 0}}
  baseline: {{enabled: false}}
  energy: {{sample_interval_ms: 50, methodology: total}}
"""
STUDIES = {
    "fleet_both": ("[h100, a100]", 4, 8),
    "fleet_kill": ("[h100]", 24, 24),
    "fleet_storage": ("[a100]", 6, 8),
    "fleet_redis": ("[a100]", 16, 16),
}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    studies = tmp_path_factory.mktemp("studies")
    for name, (hardware, n, tokens) in STUDIES.items():
        (studies / f"{name}.yaml").write_text(STUDY.format(name=name, hardware=hardware, n=n, tokens=tokens))
    f = LocalFleet(hosts=HOSTS, studies_dir=studies)
    f.start()
    saved = {k: os.environ.get(k) for k in ("LLEM_PG_URL",)}
    os.environ["LLEM_PG_URL"] = f.env()["LLEM_PG_URL"]
    try:
        yield f
    finally:
        f.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        f.remove()


@pytest.fixture(scope="module")
def instance(fleet):
    with dg.DagsterInstance.from_config(str(fleet.root / "dagster_home")) as inst:
        yield inst


def launch(fleet: LocalFleet, study: str) -> subprocess.Popen:
    """Start ``llem run STUDY --queue`` against the fleet (output to its log); return the process."""
    log = fleet.root / "logs" / f"llem-run-{study}.log"
    with open(log, "ab") as out:
        return subprocess.Popen([str(Path(sys.executable).with_name("llem")), "run", study, "--queue"],
                                env=fleet.env(), stdout=out, stderr=subprocess.STDOUT)


def finish(fleet: LocalFleet, proc: subprocess.Popen, study: str) -> int:
    """Wait for ``llem run`` to end; return its exit code."""
    try:
        return proc.wait(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        log = (fleet.root / "logs" / f"llem-run-{study}.log").read_text(errors="replace")
        pytest.fail(f"llem run {study} did not finish in {RUN_TIMEOUT_S:g} s:\n{log[-3000:]}")


def study_runs(instance: dg.DagsterInstance, study: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags={"llem/study": study})))


def wait_for(what: str, check: Callable[[], object], timeout_s: float = EVENT_TIMEOUT_S, poll_s: float = 0.1):
    """Return the first truthy ``check()``; fail after ``timeout_s`` (a hang, not a speed requirement)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(poll_s)
    pytest.fail(f"timed out waiting for {what}")


def step_events(instance: dg.DagsterInstance, run_id: str, step: str, kind: dg.DagsterEventType) -> list:
    return [e for e in instance.all_logs(run_id, of_type=kind) if e.step_key == step]


def celery_hosts(instance: dg.DagsterInstance, run_id: str, step: str) -> list[str]:
    """Return the Celery worker names that executed ``step`` of the run, in order."""
    out = []
    for e in step_events(instance, run_id, step, dg.DagsterEventType.ENGINE_EVENT):
        metadata = e.dagster_event.event_specific_data.metadata or {}
        if "Celery worker" in metadata:
            out.append(str(metadata["Celery worker"].value))
    return out


def error_text(error) -> str:
    """Return the messages of a SerializableErrorInfo and its causes and contexts."""
    if error is None:
        return ""
    return "\n".join([error.message, error_text(error.cause), error_text(error.context)])


def rows(fleet: LocalFleet, where: str = "TRUE") -> list[dict]:
    sql = f"SELECT run_id, hardware_id, measurement_key FROM experiment_results WHERE {where} ORDER BY run_id"
    return ResultStore(fleet.duckdb).query(sql).to_pylist()


def measurement_process(fleet: LocalFleet) -> psutil.Process | None:
    """Return a measurement worker (python -m llem_pipeline.measure) of this fleet that has started its engine
    process (it is measuring), or None. Other people's measurements on this machine write elsewhere."""
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if cmd[1:3] == ["-m", "llem_pipeline.measure"] and str(fleet.runs) in " ".join(cmd):
            try:
                if p.children():
                    return p
            except psutil.NoSuchProcess:
                continue
    return None


def worker_of(proc: psutil.Process) -> str | None:
    """Return the Celery worker name ('h100-1') above ``proc`` in the process tree."""
    for parent in proc.parents():
        cmd = parent.cmdline()
        if "-n" in cmd and "worker" in cmd:
            return cmd[cmd.index("-n") + 1].split("@")[0]
    return None


def test_both_targets_land_with_their_own_hardware_id(fleet, instance):
    code = finish(fleet, launch(fleet, "fleet_both"), "fleet_both")
    runs = study_runs(instance, "fleet_both")
    assert code == 0 and len(runs) == 2
    assert {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}
    stored = {r["run_id"]: r for r in rows(fleet)}
    for run in runs:
        target = run.tags["llem/target"]
        assert stored[run.run_id]["hardware_id"] == HARDWARE[target]
        # the GPU step ran on a host of the run's target, the store step on the storage host
        assert all(h.startswith(f"{target}-") for h in celery_hosts(instance, run.run_id, "gpu_measurement"))
        assert [h.split("@")[0] for h in celery_hosts(instance, run.run_id, "store_results")] == ["storage"]


def test_gpu_worker_killed_mid_measurement_is_retried_once_on_the_other_host(fleet, instance):
    proc = launch(fleet, "fleet_kill")
    victim = wait_for("the h100 measurement worker", lambda: measurement_process(fleet))
    host = worker_of(victim)
    assert host in ("h100-1", "h100-2")
    os.killpg(victim.pid, signal.SIGKILL)  # the measurement and its engine processes, mid-measurement
    # that host leaves the fleet: warm shutdown (finishes reporting the failed step, takes no new task)
    fleet.procs[f"worker-{host}"].popen.send_signal(signal.SIGTERM)
    assert finish(fleet, proc, "fleet_kill") == 0
    (run,) = study_runs(instance, "fleet_kill")
    assert run.status == dg.DagsterRunStatus.SUCCESS
    retries = step_events(instance, run.run_id, "gpu_measurement", dg.DagsterEventType.STEP_UP_FOR_RETRY)
    assert len(retries) == 1
    assert "killed by signal SIGKILL mid-measurement" in error_text(retries[0].dagster_event.event_specific_data.error)
    ran_on = [h.split("@")[0] for h in celery_hosts(instance, run.run_id, "gpu_measurement")]
    other = "h100-2" if host == "h100-1" else "h100-1"
    assert ran_on == [host, other]
    # the killed attempt left nothing behind: one result, from the retry, on the h100
    assert [r["hardware_id"] for r in rows(fleet, f"run_id = '{run.run_id}'")] == [HARDWARE["h100"]]
    fleet.stop_proc(f"worker-{host}")


def test_storage_worker_down_runs_wait_and_complete_when_it_returns(fleet, instance):
    fleet.procs["worker-storage"].popen.send_signal(signal.SIGTERM)  # warm shutdown: no task is running
    fleet.procs["worker-storage"].popen.wait(timeout=120)
    fleet.stop_proc("worker-storage")
    proc = launch(fleet, "fleet_storage")
    run = wait_for("the run", lambda: (study_runs(instance, "fleet_storage") or [None])[0])
    wait_for("the store step to be queued", lambda: any(
        "store_results" in (e.message or "") and "Submitting celery task" in (e.message or "")
        for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)))
    assert step_events(instance, run.run_id, "gpu_measurement", dg.DagsterEventType.STEP_SUCCESS)
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
    assert proc.poll() is None
    assert rows(fleet, f"run_id = '{run.run_id}'") == []
    fleet.start_storage()
    assert finish(fleet, proc, "fleet_storage") == 0
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.SUCCESS
    assert [r["hardware_id"] for r in rows(fleet, f"run_id = '{run.run_id}'")] == [HARDWARE["a100"]]


def test_redis_restart_loses_no_run(fleet, instance):
    proc = launch(fleet, "fleet_redis")
    run = wait_for("the run", lambda: (study_runs(instance, "fleet_redis") or [None])[0])
    wait_for("the GPU step to start", lambda: step_events(instance, run.run_id, "gpu_measurement",
                                                          dg.DagsterEventType.STEP_START))
    fleet.stop_proc("redis")
    assert not port_open(fleet.redis_port)
    fleet.start_redis()  # same port, same append-only file: the queues come back
    finish(fleet, proc, "fleet_redis")
    status = instance.get_run_by_id(run.run_id).status
    # no run silently lost: it either completed or failed visibly, and the store agrees
    assert status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)
    stored = rows(fleet, f"run_id = '{run.run_id}'")
    assert len(stored) == (1 if status == dg.DagsterRunStatus.SUCCESS else 0)
    assert status == dg.DagsterRunStatus.SUCCESS, "the run failed across the Redis restart (visibly)"


def test_store_holds_one_result_per_successful_run_and_its_audit_is_clean(fleet, instance):
    succeeded = {r.run_id for study in STUDIES for r in study_runs(instance, study)
                 if r.status == dg.DagsterRunStatus.SUCCESS}
    stored = rows(fleet)
    assert sorted(r["run_id"] for r in stored) == sorted(succeeded)
    assert {r["hardware_id"] for r in stored} == set(HARDWARE.values())
    assert ResultStore(fleet.duckdb).audit() == []


def test_a_pinned_gpu_host_and_the_pool_process_it_forks_run_on_its_cpus_only(fleet):
    cpu = max(os.sched_getaffinity(0))
    proc = fleet.start_gpu_host(GpuHost("pinned-1", "pinned", "H100-SXM5-80GB", cpus=(cpu,)))
    try:
        top = psutil.Process(proc.popen.pid)
        tree = [top, *top.children(recursive=True)]
        assert len(tree) >= 2, "the Celery worker and its pool process"
        assert {p.pid: p.cpu_affinity() for p in tree} == {p.pid: [cpu] for p in tree}
    finally:
        fleet.stop_proc(proc.name)


def test_a_gpu_host_pinned_to_a_cpu_it_may_not_use_is_refused_with_the_fix(tmp_path):
    fleet = LocalFleet(hosts=(), root=tmp_path)
    unusable = max(os.sched_getaffinity(0)) + 1
    with pytest.raises(FleetError, match=rf"cpus=\({unusable},\).*name CPUs from that list"):
        fleet.start_gpu_host(GpuHost("bad-1", "bad", "H100-SXM5-80GB", cpus=(unusable,)))
    assert fleet.procs == {}


def test_stopping_the_fleet_leaves_no_process_or_port_behind(fleet):
    started = []
    for proc in fleet.procs.values():
        try:
            top = psutil.Process(proc.popen.pid)
            started += [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    assert started
    fleet.stop()
    alive = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == []
    assert fleet.leftovers() == []
    assert not port_open(fleet.redis_port) and not port_open(fleet.pg_port)
