"""A writer process for crash tests: rewrites one partition forever, alternating two runs of known sizes.

``python -c WRITER DB DAY CONFIG_HASH`` prints "ready" once the schema exists, then loops; SIGKILL it at
any moment and the partition must hold exactly one run's rows (SIZES), old or new, never half.
"""

import textwrap

# run_id -> (samples, requests): every run has its own sizes so a half-written partition shows.
SIZES = {"old": (1000, 4), "new-a": (130_000, 9), "new-b": (70_000, 13)}

WRITER = textwrap.dedent(
    """
    import sys
    from llem_pipeline.storage import ResultStore
    from llem_pipeline_tests.storage.run_folder_factory import requests_table, timeseries_table
    db, day, h = sys.argv[1:4]
    sizes = {"new-a": (130_000, 9), "new-b": (70_000, 13)}
    tables = {r: {"power_samples": timeseries_table(s, seed=1), "requests": requests_table(q)} for r, (s, q) in sizes.items()}
    store = ResultStore(db, lock_timeout_s=60)
    store.ensure_schema()
    print("ready", flush=True)
    while True:
        for run_id, t in tables.items():
            store.write_tables(day, h, run_id, t)
    """
)
