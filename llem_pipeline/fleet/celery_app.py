"""The Celery app of a fleet worker: ``celery -A llem_pipeline.fleet.celery_app worker -Q gpu-h100 -c 1``.

The same broker, result backend and settings as the fleet executor (llem_pipeline.fleet.executor); the one
task is dagster-celery's step task, which executes one step of a run on this host.
"""

from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from llem_pipeline.fleet.executor import worker_app_args

app = make_app(worker_app_args())
execute_plan = create_task(app)
