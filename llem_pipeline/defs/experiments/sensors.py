"""study_registry: studies/*.yaml → measurement partitions + experiment_configs rows (running by default).

Invalid study files never crash the sensor: each is logged with its error and named in the tick's
skip reason; the valid ones are still registered.
"""

import dagster as dg

from llem_pipeline.defs.automation.study_runs import measurement_keys
from llem_pipeline.defs.experiments.partitions import MEASUREMENTS_PARTITIONS_NAME, measurements
from llem_pipeline.defs.experiments.registry import StudyScan, remember_config, scan_studies
from llem_pipeline.defs.measurements.devices import target_name
from llem_pipeline.defs.measurements.gpu_allocator import GpuAllocator
from llem_pipeline.defs.settings import LlemPaths, LlemStore


def register_studies(scan: StudyScan, store: LlemStore, paths: LlemPaths, target: str,
                     known: set[str]) -> tuple[list[str], int]:
    """Upsert every valid study's configs into experiment_configs and keep a copy of each config.

    Returns (measurement keys on ``target`` not yet registered as partitions, experiment_configs rows written).
    """
    written = 0
    result_store = store.store()
    keys: list[str] = []
    for study, plan in sorted(scan.plans.items()):
        written += result_store.upsert_configs(study, plan.config_by_hash())
        keys += measurement_keys(plan, target)
    for config_hash, config in scan.configs.items():
        remember_config(config_hash, config, paths.data())
    return sorted(set(keys) - known), written


@dg.sensor(
    name="study_registry",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Reads studies/*.yaml; registers each study config on this host's hardware target as a partition "
    f"of '{MEASUREMENTS_PARTITIONS_NAME}' and upserts experiment_configs (study → config).",
)
def study_registry(context: dg.SensorEvaluationContext, llem_store: LlemStore, llem_paths: LlemPaths,
                   gpu_allocator: GpuAllocator) -> dg.SensorResult | dg.SkipReason:
    """Return a SensorResult adding new measurement partitions, or a SkipReason when nothing changed."""
    scan = scan_studies(llem_paths.studies())
    problems = scan.error_summary()
    for name, message in sorted(scan.errors.items()):
        context.log.warning(f"invalid study file {name} (skipped): {message}")
    invalid = f" Invalid study files (skipped): {problems}" if problems else ""
    target = target_name(gpu_allocator.devices)
    known = set(context.instance.get_dynamic_partitions(MEASUREMENTS_PARTITIONS_NAME))
    wanted = {k for plan in scan.plans.values() for k in measurement_keys(plan, target)}
    cursor = f"{scan.fingerprint}:{target}"
    if cursor == context.cursor and wanted <= known:
        return dg.SkipReason(f"studies unchanged ({len(scan.plans)} valid, {len(scan.configs)} configs).{invalid}")
    new, written = register_studies(scan, llem_store, llem_paths, target, known)
    context.log.info(f"registered {len(new)} new measurement partition(s) {new}; {written} experiment_configs row(s)")
    return dg.SensorResult(
        dynamic_partitions_requests=[measurements.build_add_request(new)] if new else [],
        cursor=cursor,
        skip_reason=f"registered {len(new)} new partition(s), {written} experiment_configs row(s).{invalid}",
    )
