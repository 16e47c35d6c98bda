"""Fleet mode: the same code location on many GPU hosts, on engines operators already run (docs/fleet.md).

- ``executor``: which executor the measurement jobs use (LLEM_EXECUTOR: in_process by default, celery in a
  fleet) and the Celery executor that routes each GPU step to its hardware target's queue.
- ``celery_app``: the app a Celery worker runs (``celery -A llem_pipeline.fleet.celery_app worker -Q ...``).
- ``k8s``: the Kubernetes pod/job spec of a GPU step, built from the same tags.
- ``local``: a local fleet (Redis, Postgres, workers, daemon) in a temporary folder, for `make fleet-demo`
  and the fleet tests.

Nothing here is imported by the default (in-process) path; the ``fleet`` extra installs what it needs.
"""
