"""study_registry: studies/*.yaml → dynamic config partitions + experiment_configs rows (running by default).

Invalid study files never crash the sensor: each is read on its own (bounded in size, sweep points and
time), logged with its error and named in the tick's skip reason; the valid ones are still registered.
Skipped sweep points are logged with their reason whenever the studies change. Config rows that no
study file defines any more (file deleted, study renamed, point removed) are marked retired in
experiment_configs (kept for history) and current again when a study defines them again.
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


def register_and_retire(scan: StudyScan, store: LlemStore, known: set[str]) -> tuple[list[str], int, int]:
    """Register every valid study's configs and retire those no study file defines any more (one transaction),
    and keep a copy of each config.

    Returns (config hashes not yet registered as partitions, experiment_configs rows upserted, rows newly
    retired). Rows of study files that are present but invalid are neither upserted nor retired.
    """
    studies = {name: (scan.files.get(name, f"{name}.yaml"), plan.config_by_hash()) for name, plan in scan.plans.items()}
    written, retired = store.store().register_studies(studies, unreadable_files=set(scan.errors))
    for config_hash, config in scan.configs.items():
        remember_config(config_hash, config)
    return sorted(set(scan.configs) - known), written, retired


def register_studies(scan: StudyScan, store: LlemStore, known: set[str]) -> tuple[list[str], int]:
    """Upsert every valid study's configs into experiment_configs (retiring the configs no study file defines
    any more) and keep a copy of each config.

    Returns (config hashes not yet registered as partitions, experiment_configs rows written).
    """
    new, written, _retired = register_and_retire(scan, store, known)
    return new, written


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
    new, written, retired = register_and_retire(scan, llem_store, known)
    context.log.info(f"registered {len(new)} new config(s) {new}; {written} experiment_configs row(s) upserted; "
                     f"{retired} row(s) retired (no study file defines them any more)")
    gone = f" {retired} config row(s) retired." if retired else ""
    return dg.SensorResult(
        dynamic_partitions_requests=[config_partitions.build_add_request(new)] if new else [],
        cursor=scan.fingerprint,
        skip_reason=f"registered {len(new)} new config(s), {written} experiment_configs row(s).{gone}{skipped}{invalid}",
    )
