"""Which executor the measurement jobs run on, chosen by configuration (LLEM_EXECUTOR), and the fleet's one.

``in_process`` (the default, `make demo`): every step in the run's process, no server needed.
``celery``: dagster-celery over Redis. Each step is a Celery task on the queue its op tag names
(``dagster-celery/queue``): the GPU step's tag is ``gpu-{target}``, filled in per run with its hardware
target (run tag ``llem/target``, else the target in its measurement partition key), so a run measured on
'h100' goes to queue ``gpu-h100``, served by the h100 hosts' single-slot workers; the DuckDB steps go to
the one ``storage`` queue. The executor and the workers share the broker, the result backend and
CELERY_SETTINGS (LLEM_CELERY_BROKER, LLEM_CELERY_BACKEND).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import dagster as dg

from llem_pipeline.defs.constants import CELERY_QUEUE_TAG, TARGET_TAG
from llem_pipeline.defs.experiments.partitions import MeasurementKey

EXECUTOR_ENV = "LLEM_EXECUTOR"
BROKER_ENV = "LLEM_CELERY_BROKER"
BACKEND_ENV = "LLEM_CELERY_BACKEND"
EXECUTORS = ("in_process", "celery")
MEASUREMENT_PARTITION_TAG = "dagster/partition/measurement"

# Celery settings of both sides (executor and workers). A Redis restart must not lose a run: the run
# worker keeps polling results through a broker outage (result_backend_always_retry, up to ~5 min), and
# publishing a task retries for as long; Redis itself keeps its queues on disk (appendonly, see local.py).
CELERY_SETTINGS: dict[str, Any] = {
    "worker_prefetch_multiplier": 1,
    "task_default_queue": "dagster",
    "result_backend_always_retry": True,
    "result_backend_max_retries": 300,
    "result_backend_base_sleep_between_retries_ms": 200,
    "result_backend_max_sleep_between_retries_ms": 1000,
    "task_publish_retry": True,
    "task_publish_retry_policy": {"max_retries": 300, "interval_start": 0.2, "interval_step": 0.2,
                                  "interval_max": 1.0},
    "broker_connection_retry_on_startup": True,
    "broker_connection_max_retries": None,
    "broker_transport_options": {"max_retries": 300, "interval_start": 0.2, "interval_step": 0.2,
                                 "interval_max": 1.0},
}


class FleetConfigError(ValueError):
    """The fleet configuration cannot be used; the message names the setting, its value and the fix."""


def executor_name() -> str:
    """Return the configured executor name (LLEM_EXECUTOR, default 'in_process'); raises FleetConfigError for
    another value."""
    name = os.environ.get(EXECUTOR_ENV, "").strip() or "in_process"
    if name not in EXECUTORS:
        raise FleetConfigError(f"{EXECUTOR_ENV}={name!r} is not an executor: use 'in_process' (the default, one "
                               "host) or 'celery' (a fleet; needs LLEM_CELERY_BROKER and the `fleet` extra)")
    return name


def step_queue(step_tags: Mapping[str, str], run_tags: Mapping[str, str], default: str) -> str:
    """Return the Celery queue of a step: its ``dagster-celery/queue`` tag (``default`` without one) with
    ``{target}`` replaced by the run's hardware target. Raises FleetConfigError when the run has no target."""
    queue = step_tags.get(CELERY_QUEUE_TAG, default)
    if "{target}" not in queue:
        return queue
    target = run_tags.get(TARGET_TAG)
    if not target and run_tags.get(MEASUREMENT_PARTITION_TAG):
        target = MeasurementKey.parse(run_tags[MEASUREMENT_PARTITION_TAG]).target
    if not target:
        raise FleetConfigError(
            f"a GPU step's queue is {queue!r} but its run has no {TARGET_TAG} tag and no measurement partition: "
            "launch measurement runs for a partition (llem run, the Launchpad's partition picker, a backfill)"
        )
    return queue.format(target=target)


def worker_app_args() -> dict[str, Any]:
    """Return the Celery app arguments of a fleet worker: the same broker, backend and settings as the executor."""
    from dagster_celery.executor import CeleryExecutor

    broker = os.environ.get(BROKER_ENV, "").strip()
    if not broker:
        raise FleetConfigError(f"{BROKER_ENV} is not set: a fleet worker needs the Redis broker URL, e.g. "
                               "redis://127.0.0.1:6379/0")
    return CeleryExecutor.for_cli(broker=broker, backend=os.environ.get(BACKEND_ENV) or broker,
                                  config_source=dict(CELERY_SETTINGS)).app_args()


def _routed_celery_executor() -> dg.ExecutorDefinition:
    """Return dagster-celery's executor with each step sent to ``step_queue`` (configured from the environment)."""
    from dagster_celery import celery_executor
    from dagster_celery.core_execution_loop import core_celery_execution_loop
    from dagster_celery.executor import CeleryExecutor
    from dagster_celery.executor import (
        _submit_task as submit_task,  # the plugin's own submit, queue chosen here
    )

    class RoutedCeleryExecutor(CeleryExecutor):
        """dagster-celery's executor; the queue of each step comes from ``step_queue``."""

        def execute(self, plan_context, execution_plan):
            run_tags = plan_context.dagster_run.tags

            def submit(app, context, step, queue, priority, known_state):
                return submit_task(app, context, step, step_queue(step.tags, run_tags, queue), priority, known_state)

            return core_celery_execution_loop(plan_context, execution_plan, step_execution_fn=submit)

    @dg.executor(name="llem_celery", config_schema=celery_executor.config_schema,
                 requirements=dg.multiple_process_executor_requirements())
    def llem_celery(init_context):
        base = celery_executor.executor_creation_fn(init_context)
        routed = RoutedCeleryExecutor.__new__(RoutedCeleryExecutor)
        routed.__dict__.update(vars(base))
        return routed

    return llem_celery.configured(
        {"broker": {"env": BROKER_ENV}, "backend": {"env": BACKEND_ENV if os.environ.get(BACKEND_ENV) else BROKER_ENV},
         "config_source": dict(CELERY_SETTINGS)},
        name="llem_celery",
    )


def measurement_executor() -> dg.ExecutorDefinition:
    """Return the executor of the measurement and report jobs: in-process by default, the routed Celery
    executor when LLEM_EXECUTOR=celery (LLEM_CELERY_BROKER required)."""
    if executor_name() == "in_process":
        return dg.in_process_executor
    if not os.environ.get(BROKER_ENV, "").strip():
        raise FleetConfigError(f"{EXECUTOR_ENV}=celery needs {BROKER_ENV}, the Redis broker URL (e.g. "
                               "redis://127.0.0.1:6379/0)")
    try:
        return _routed_celery_executor()
    except ImportError as err:
        raise FleetConfigError(f"{EXECUTOR_ENV}=celery needs the fleet extra (pip install -e '.[fleet]'): {err}") from None
