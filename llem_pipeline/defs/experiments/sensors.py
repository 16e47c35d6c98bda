"""study_registry: studies/*.yaml → dynamic config partitions + experiment_configs rows (running by default).

Invalid study files never crash the sensor: each is read on its own (bounded in size, sweep points and
time), logged with its error and named in the tick's skip reason; the valid ones are still registered.
Skipped sweep points are logged with their reason whenever the studies change.
"""


import dagster as dg

from llem_pipeline.defs.experiments.partitions import CONFIG_PARTITIONS_NAME, config_partitions
from llem_pipeline.defs.experiments.registry import (
    StudyScan,
    remember_config,
    scan_report_lines,
    scan_studies,
)
from llem_pipeline.defs.store_resource import LlemStore


def register_studies(scan: StudyScan, store: LlemStore, known: set[str]) -> tuple[list[str], int]:
    """Upsert every valid study's configs into experiment_configs and keep a copy of each config.

    Returns (config hashes not yet registered as partitions, experiment_configs rows written).
    """
    written = 0
    result_store = store.store()
    for study, plan in sorted(scan.plans.items()):
        written += result_store.upsert_configs(study, plan.config_by_hash())
    for config_hash, config in scan.configs.items():
        remember_config(config_hash, config)
    return sorted(set(scan.configs) - known), written


@dg.sensor(
    name="study_registry",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Reads studies/*.yaml; registers each unique config hash as a partition of "
    f"'{CONFIG_PARTITIONS_NAME}' and upserts experiment_configs (study → config).",
)
def study_registry(context: dg.SensorEvaluationContext, llem_store: LlemStore) -> dg.SensorResult | dg.SkipReason:
    """Return a SensorResult adding new config partitions, or a SkipReason when nothing changed."""
    scan = scan_studies()
    problems = scan.error_summary()
    for name, message in sorted(scan.errors.items()):
        context.log.warning(f"invalid study file {name} (skipped): {message}")
    invalid = f" Invalid study files (skipped): {problems}" if problems else ""
    skipped = f" {scan.skipped_count()} sweep point(s) skipped (see the tick's log)." if scan.skipped_count() else ""
    known = set(context.instance.get_dynamic_partitions(CONFIG_PARTITIONS_NAME))
    pending = set(scan.configs) - known
    if scan.fingerprint == context.cursor and not pending:
        return dg.SkipReason(
            f"studies unchanged ({len(scan.plans)} valid, {len(scan.configs)} configs).{skipped}{invalid}"
        )
    for line in scan_report_lines(scan, invalid_files=False):  # invalid files were logged above
        context.log.warning(line)
    new, written = register_studies(scan, llem_store, known)
    context.log.info(f"registered {len(new)} new config(s) {new}; {written} experiment_configs row(s) upserted")
    return dg.SensorResult(
        dynamic_partitions_requests=[config_partitions.build_add_request(new)] if new else [],
        cursor=scan.fingerprint,
        skip_reason=f"registered {len(new)} new config(s), {written} experiment_configs row(s).{skipped}{invalid}",
    )
