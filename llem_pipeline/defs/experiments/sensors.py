"""study_registry: studies/*.yaml → measurement partitions + experiment_configs rows (running by default).

Invalid study files never crash the sensor: each is read on its own (bounded in size, sweep points and
time), logged with its error and named in the tick's skip reason; the valid ones are still registered.
Skipped sweep points are logged with their reason whenever the studies change. Config rows that no
study file defines any more (file deleted, study renamed, point removed) are marked retired in
experiment_configs (kept for history) and current again when a study defines them again.
"""

import dagster as dg

from llem_pipeline.defs.automation.study_runs import measurement_keys
from llem_pipeline.defs.experiments.partitions import MEASUREMENTS_PARTITIONS_NAME, measurements
from llem_pipeline.defs.experiments.registry import (
    StudyScan,
    remember_config,
    scan_report_lines,
    scan_studies,
)
from llem_pipeline.defs.measurements.devices import host_target
from llem_pipeline.defs.measurements.gpu_allocator import GpuAllocator
from llem_pipeline.defs.settings import LlemPaths, LlemStore


def register_and_retire(scan: StudyScan, store: LlemStore, paths: LlemPaths, target: str,
                        known: set[str]) -> tuple[list[str], int, int]:
    """Register every valid study's configs and retire those no study file defines any more (one transaction),
    and keep a copy of each config under the data dir.

    Returns (measurement keys on ``target`` not yet registered as partitions, experiment_configs rows upserted,
    rows newly retired). Rows of study files that are present but invalid are neither upserted nor retired.
    """
    studies = {name: (scan.files.get(name, f"{name}.yaml"), plan.config_by_hash()) for name, plan in scan.plans.items()}
    written, retired = store.store().register_studies(studies, unreadable_files=set(scan.errors))
    for config_hash, config in scan.configs.items():
        remember_config(config_hash, config, paths.data())
    keys = {k for plan in scan.plans.values() for k in measurement_keys(plan, target)}
    return sorted(keys - known), written, retired


@dg.sensor(
    name="study_registry",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Reads studies/*.yaml; registers each study config on this host's hardware target as a partition "
    f"of '{MEASUREMENTS_PARTITIONS_NAME}', upserts experiment_configs (study → config) and retires the configs "
    "no study file defines any more.",
)
def study_registry(context: dg.SensorEvaluationContext, llem_store: LlemStore, llem_paths: LlemPaths,
                   gpu_allocator: GpuAllocator) -> dg.SensorResult | dg.SkipReason:
    """Return a SensorResult adding new measurement partitions, or a SkipReason when nothing changed."""
    scan = scan_studies(llem_paths.studies())
    problems = scan.error_summary()
    for name, message in sorted(scan.errors.items()):
        context.log.warning(f"invalid study file {name} (skipped): {message}")
    invalid = f" Invalid study files (skipped): {problems}" if problems else ""
    skipped = f" {scan.skipped_count()} sweep point(s) skipped (see the tick's log)." if scan.skipped_count() else ""
    target = host_target(gpu_allocator.devices, gpu_allocator.target)
    known = set(context.instance.get_dynamic_partitions(MEASUREMENTS_PARTITIONS_NAME))
    wanted = {k for plan in scan.plans.values() for k in measurement_keys(plan, target)}
    cursor = f"{scan.fingerprint}:{target}"
    if cursor == context.cursor and wanted <= known:
        return dg.SkipReason(
            f"studies unchanged ({len(scan.plans)} valid, {len(scan.configs)} configs).{skipped}{invalid}"
        )
    for line in scan_report_lines(scan, invalid_files=False):  # invalid files were logged above
        context.log.warning(line)
    new, written, retired = register_and_retire(scan, llem_store, llem_paths, target, known)
    context.log.info(f"registered {len(new)} new measurement partition(s) {new}; {written} experiment_configs "
                     f"row(s) upserted; {retired} row(s) retired (no study file defines them any more)")
    gone = f" {retired} config row(s) retired." if retired else ""
    return dg.SensorResult(
        dynamic_partitions_requests=[measurements.build_add_request(new)] if new else [],
        cursor=cursor,
        skip_reason=f"registered {len(new)} new partition(s), {written} experiment_configs row(s).{gone}{skipped}"
        f"{invalid}",
    )
