"""The GPU step: one op materialising environment_snapshot, baseline_power and raw_process_results.

It holds one slot of pool "gpu" (Dagster counts GPU steps across runs) and a GpuAllocator lease (which
GPU, and the study's cooldown gap since that GPU's previous measurement), runs the worker command through
Dagster Pipes under a hard timeout, and returns the run folder the worker wrote; RunFolderIOManager keeps
the outputs there. It never opens DuckDB: the CPU step downstream stores the results.
"""

import json
import tempfile
from pathlib import Path

import dagster as dg

from llem_pipeline.defs.constants import (
    ASSET_GROUP,
    GAP_TAG,
    GPU_OP_TAG,
    GPU_POOL,
    GPU_STEP_KEY,
    HARNESS_CODE_VERSION,
    OWNERS,
    RUN_FOLDER_IO_MANAGER,
)
from llem_pipeline.defs.experiments.partitions import (
    KEY_FORMAT,
    MeasurementKey,
    measurement_partitions,
    split_partition_key,
)
from llem_pipeline.defs.experiments.registry import resolve_config
from llem_pipeline.defs.measurements.devices import DeviceSpecError, host_target
from llem_pipeline.defs.measurements.gpu_allocator import GpuAllocationError, GpuAllocator
from llem_pipeline.defs.measurements.guard import KILLED_PREFIX
from llem_pipeline.defs.measurements.io_manager import BASELINE, ENVIRONMENT, RAW
from llem_pipeline.defs.measurements.worker import MeasurementWorker, worker_error
from llem_pipeline.defs.settings import LlemPaths
from llem_pipeline.domain.errors import ConfigError
from llem_pipeline.domain.identity import hardware_id
from llem_pipeline.measure.run_folder import RunFolder, RunFolderError, run_folder_path
from llem_pipeline.measure.run_store import upload_run_folder


def _out(description: str, kinds: set[str]) -> dg.AssetOut:
    return dg.AssetOut(
        description=description,
        group_name=ASSET_GROUP,
        owners=OWNERS,
        kinds=kinds,
        code_version=HARNESS_CODE_VERSION,
        io_manager_key=RUN_FOLDER_IO_MANAGER,
        is_required=True,
    )


def _fail(description: str, **metadata: str) -> dg.Failure:
    return dg.Failure(description=description, metadata=metadata, allow_retries=False)


def require_partition(context: dg.AssetExecutionContext) -> tuple[str, MeasurementKey]:
    """Return (run_date, MeasurementKey) of the run's partition; raises dg.Failure saying how to pick one when
    the run has none or it is not a measurement partition."""
    if not context.has_partition_key:
        raise _fail(
            "this run has no partition: a measurement run measures one (date × measurement) partition, key "
            f"{KEY_FORMAT!r}, e.g. '2026-12-06|demo~batch_size=8~sim~2de5716c3fd98f72'. Pick one in the "
            "Launchpad's partition selector (or the asset's Partitions tab), or run `llem run STUDY`."
        )
    try:
        return split_partition_key(context.partition_key)
    except ValueError as err:
        raise _fail(str(err)) from None


def _gap_s(context: dg.AssetExecutionContext) -> float:
    """Return the study's cooldown gap for this run, s (run tag llem/gap_s; 0 when absent)."""
    raw = context.run.tags.get(GAP_TAG)
    try:
        return max(0.0, float(raw)) if raw is not None else 0.0
    except ValueError:
        raise _fail(f"run tag {GAP_TAG}={raw!r} is not a number of seconds") from None


@dg.multi_asset(
    name=GPU_STEP_KEY,
    outs={
        ENVIRONMENT: _out("Software and hardware of the measurement (environment.json of the run folder).",
                          {"nvidia", "json"}),
        BASELINE: _out("Idle power of the same GPUs before the model loaded, W (baseline.json; None when disabled).",
                       {"nvidia", "json"}),
        RAW: _out(
            "The worker's run folder: one RawProcessResult per engine process, the aggregated result, the power "
            "timeseries and the per-request Parquet sidecars (docs/run-folder.md).",
            {"nvidia", "parquet"},
        ),
    },
    partitions_def=measurement_partitions,
    pool=GPU_POOL,
    op_tags=GPU_OP_TAG,
    retry_policy=dg.RetryPolicy(max_retries=1),
    description="GPU step: measure one experiment config on exclusively held GPU(s) with the worker command.",
)
def gpu_measurement(
    context: dg.AssetExecutionContext,
    gpu_allocator: GpuAllocator,
    measurement_worker: MeasurementWorker,
    pipes_subprocess_client: dg.PipesSubprocessClient,
    llem_paths: LlemPaths,
):
    """Run the worker for the partition's config; yields one Output per asset, read from the run folder."""
    run_date, key = require_partition(context)
    try:
        config = resolve_config(key.config_hash, llem_paths.studies(), llem_paths.data())
        serves = host_target(gpu_allocator.devices, gpu_allocator.target)
    except (ConfigError, DeviceSpecError) as err:
        raise _fail(str(err), config_hash=key.config_hash) from None
    if key.target != serves:
        raise _fail(
            f"partition {key.key} is for hardware target {key.target!r}, but this code location's devices "
            f"(LLEM_DEVICES={gpu_allocator.devices!r}, LLEM_TARGET={gpu_allocator.target!r}) serve target {serves!r}: "
            "measure it where that target runs (in a fleet: a worker of queue 'gpu-<target>')"
        )
    run_id = context.run.run_id
    out_dir = run_folder_path(llem_paths.runs(), run_date, key.config_hash, run_id)
    with tempfile.TemporaryDirectory(dir=llem_paths.scratch(), prefix=f"{key.config_hash}-") as tmp:
        config_path = Path(tmp) / "config.json"
        config_path.write_text(json.dumps(config.model_dump(mode="json")), encoding="utf-8")
        stderr_log = Path(tmp) / "worker.stderr"
        try:
            with gpu_allocator.acquire(config.num_processes * config.devices_per_process, holder=run_id,
                                       gap_s=_gap_s(context), lock_dir=llem_paths.locks(),
                                       on_wait=context.log.info) as lease:
                gap = f" after a {lease.gap_wait_s:.1f} s cooldown" if lease.gap_wait_s else ""
                context.log.info(f"GPU lease: devices={lease.worker_devices!r} for {key.label} ({run_date}){gap}")
                command = measurement_worker.command(
                    config_path=config_path, devices=lease.worker_devices, out_dir=out_dir, run_id=run_id,
                    experiment_id=f"{key.config_hash}-{run_date}-{run_id[:8]}", stderr_log=stderr_log,
                    baseline_cache=llem_paths.baseline_cache(),
                )
                try:
                    invocation = pipes_subprocess_client.run(
                        command=command,
                        context=context,
                        env={"CUDA_VISIBLE_DEVICES": lease.cuda_visible_devices, **measurement_worker.env()},
                        extras={"run_date": run_date, "config_hash": key.config_hash, "devices": lease.worker_devices},
                    )
                except Exception as err:  # the Pipes client's error only says "failed with code N"
                    reason = worker_error(stderr_log) or f"{type(err).__name__}: {err}"
                    # a worker killed from outside (host trouble, OOM killer) is retried once by the retry
                    # policy, on any worker of the same target; every other failure is final (GPU hours)
                    raise dg.Failure(description=f"the measurement worker failed: {reason}",
                                     metadata={"command": " ".join(command)},
                                     allow_retries=reason.startswith(KILLED_PREFIX)) from None
                finally:
                    # logged while the lease is still held: the next holder's "GPU lease:" line comes after it
                    context.log.info(f"GPU lease ends: devices={lease.worker_devices!r} for {key.label} ({run_date})")
        except (DeviceSpecError, GpuAllocationError) as err:
            raise _fail(str(err)) from None
    try:
        folder = RunFolder.open(llem_paths.runs(), run_date, key.config_hash, run_id)
    except RunFolderError as err:
        raise _fail(f"the worker exited 0 but its run folder is not valid: {err}") from None
    if llem_paths.run_store:  # the storage host fetches it from there (verified against the manifest)
        try:
            remote = upload_run_folder(folder.path, llem_paths.run_store, run_date, key.config_hash, run_id)
        except (OSError, RunFolderError) as err:
            raise _fail(f"the run folder could not be published to the run store {llem_paths.run_store}: {err}") from None
        context.log.info(f"run folder published to {remote}")
    reported = {}
    for result in invocation.get_results():
        if isinstance(result, dg.MaterializeResult) and result.metadata:
            reported.update(result.metadata)
    env = folder.environment
    hardware = hardware_id(env.device_kind, env.gpu_names)
    common = {"label": key.label, "hardware_id": hardware, "device_kind": env.device_kind or "unknown"}
    yield dg.Output(env, ENVIRONMENT, metadata={
        **common,
        "gpu_names": ", ".join(env.gpu_names) or "none",
        "python": env.python_version,
        "torch": env.torch_version or "n/a",
    })
    baseline = folder.baseline
    yield dg.Output(baseline, BASELINE, metadata={
        **common,
        **({"baseline_total_power_w": float(baseline["total_power_w"])} if baseline else {}),
        "provenance": (baseline or {}).get("provenance", "disabled"),
    })
    processes = folder.processes
    yield dg.Output(folder, RAW, metadata={
        **common,
        **{k: v for k, v in reported.items() if k not in common},
        "num_processes": len(processes),
        "output_tokens": sum(p.output_tokens for p in processes),
        "energy_j": sum(p.energy_j for p in processes),
    })
