"""A writer process for crash tests: writes two runs of one config forever, each replacing its own rows.

``python -c WRITER DB DAY`` prints "ready" once the schema exists, then loops writing run "new-a" and run
"new-b" (retries of the same two runs, each of its own known size); SIGKILL it at any moment and every run
stored must hold exactly its own rows in every table (SIZES), never half, and the run "old" written
before must be untouched.
"""

import textwrap

# run_id -> (samples, requests): every run has its own sizes so a half-written run shows.
SIZES = {"old": (1000, 4), "new-a": (130_000, 9), "new-b": (70_000, 13)}

WRITER = textwrap.dedent(
    """
    import sys
    from llem_pipeline.storage import ResultStore
    from llem_pipeline_tests.storage.record_factory import make_config, make_record
    db, day = sys.argv[1:3]
    sizes = {"new-a": (130_000, 9), "new-b": (70_000, 13)}
    records = [make_record(make_config(model="crash"), run_date=day, run_id=r, n_samples=s, n_requests=q, seed=1)
               for r, (s, q) in sizes.items()]
    store = ResultStore(db, lock_timeout_s=60)
    store.ensure_schema()
    print("ready", flush=True)
    while True:
        for record in records:
            store.write_run(record)
    """
)
