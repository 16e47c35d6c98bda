"""The GPU step: one op materialising environment_snapshot, baseline_power and raw_process_results.

It holds one pool "gpu" slot (Dagster counts GPU steps across runs) and a GpuAllocator lease (which
GPU), runs the worker through Dagster Pipes with a hard timeout, and reads the run folder. It never
opens DuckDB: the CPU step downstream loads the run folder into the database (run_lookup.py).
"""


import json
import tempfile
from pathlib import Path

import dagster as dg

from llem_pipeline.defs.constants import (
    GPU_OP_TAG,
    GPU_POOL,
    GPU_STEP_KEY,
    HARNESS_CODE_VERSION,
    MEASUREMENT_GROUP,
    OWNERS,
)
from llem_pipeline.defs.experiments.partitions import measurement_partitions, split_measurement_key
from llem_pipeline.defs.experiments.registry import resolve_config
from llem_pipeline.defs.measurements.devices import DeviceSpecError
from llem_pipeline.defs.measurements.gpu_allocator import GpuAllocationError, GpuAllocator
from llem_pipeline.defs.measurements.run_folder import RunFolder
from llem_pipeline.defs.measurements.run_lookup import BASELINE, ENVIRONMENT, RAW
from llem_pipeline.defs.measurements.worker import MeasurementWorker, worker_error
from llem_pipeline.domain.errors import ConfigError
from llem_pipeline.paths import data_dir


def _out(description: str, kinds: set[str]) -> dg.AssetOut:
    return dg.AssetOut(
        description=description,
        group_name=MEASUREMENT_GROUP,
        owners=OWNERS,
        kinds=kinds,
        code_version=HARNESS_CODE_VERSION,
        is_required=True,
    )


def _fail(description: str, **metadata: str) -> dg.Failure:
    return dg.Failure(description=description, metadata=metadata, allow_retries=False)


@dg.multi_asset(
    name=GPU_STEP_KEY,
    outs={
        ENVIRONMENT: _out("Software and hardware of the measurement (environment.json of the run folder).", {"nvidia", "json"}),
        BASELINE: _out("Idle power of the same GPUs before the model loaded, W (baseline.json; None when disabled).", {"nvidia", "json"}),
        RAW: _out(
            "The worker's run folder: one RawProcessResult per engine process plus the power timeseries and "
            "per-request Parquet sidecars.",
            {"nvidia", "parquet"},
        ),
    },
    partitions_def=measurement_partitions,
    pool=GPU_POOL,
    op_tags=GPU_OP_TAG,
    description="GPU step: measure one experiment config on exclusively held GPU(s) with the worker command.",
)
def gpu_measurement(
    context: dg.AssetExecutionContext,
    gpu_allocator: GpuAllocator,
    measurement_worker: MeasurementWorker,
    pipes_subprocess_client: dg.PipesSubprocessClient,
):
    """Run the worker for the partition's config; yields one MaterializeResult per asset, with metadata read
    from the run folder the worker wrote (the folder is the value: no I/O manager stores it again)."""
    run_date, config_hash = split_measurement_key(context.partition_key)
    try:
        config = resolve_config(config_hash)
    except ConfigError as err:
        raise _fail(str(err), config_hash=config_hash) from None
    folder = RunFolder(run_date=run_date, config_hash=config_hash, run_id=context.run.run_id)
    scratch = data_dir() / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix=f"{config_hash}-") as tmp:
        config_path = Path(tmp) / "config.json"
        config_path.write_text(json.dumps(config.model_dump(mode="json")), encoding="utf-8")
        stderr_log = Path(tmp) / "worker.stderr"
        try:
            lease_cm = gpu_allocator.acquire(config.num_processes * config.devices_per_process, holder=context.run.run_id)
            with lease_cm as lease:
                context.log.info(f"GPU lease: devices={lease.worker_devices!r} for {config_hash} ({run_date})")
                command = measurement_worker.command(
                    config_path=config_path, devices=lease.worker_devices, out_dir=folder.path,
                    run_id=context.run.run_id, experiment_id=f"{config_hash}-{run_date}", stderr_log=stderr_log,
                )
                try:
                    invocation = pipes_subprocess_client.run(
                        command=command,
                        context=context,
                        env={"CUDA_VISIBLE_DEVICES": lease.cuda_visible_devices},
                        extras={"run_date": run_date, "config_hash": config_hash, "devices": lease.worker_devices},
                    )
                except dg.DagsterPipesExecutionError as err:
                    reason = worker_error(stderr_log) or str(err)
                    raise _fail(f"the measurement worker failed: {reason}", command=" ".join(command)) from None
                finally:
                    # logged while the lease is still held: the next holder's "GPU lease:" line comes after it
                    context.log.info(f"GPU lease ends: devices={lease.worker_devices!r} for {config_hash} ({run_date})")
        except (DeviceSpecError, GpuAllocationError) as err:
            raise _fail(str(err)) from None
    reported = {}
    for result in invocation.get_results():
        if isinstance(result, dg.MaterializeResult) and result.metadata:
            reported.update(result.metadata)
    env = folder.environment()
    baseline = folder.baseline()
    processes = folder.process_results()
    common = {"run_dir": dg.MetadataValue.path(str(folder.path)), "device_kind": env.device_kind or "unknown"}
    yield dg.MaterializeResult(asset_key=ENVIRONMENT, metadata={
        **common,
        "gpu_names": ", ".join(env.gpu_names) or "none",
        "python": env.python_version,
        "torch": env.torch_version or "n/a",
    })
    yield dg.MaterializeResult(asset_key=BASELINE, metadata={
        **common,
        **({"baseline_total_power_w": float(baseline["total_power_w"])} if baseline else {}),
        "provenance": (baseline or {}).get("provenance", "disabled"),
    })
    yield dg.MaterializeResult(asset_key=RAW, metadata={
        **common,
        **{k: v for k, v in reported.items() if k not in common},
        "num_processes": len(processes),
        "output_tokens": sum(p.output_tokens for p in processes),
        "energy_j": sum(p.energy_j for p in processes),
    })
