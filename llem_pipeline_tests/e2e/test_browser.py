"""Drive Debian's Chromium with Playwright against `dg dev`: pick a demo partition by its readable label in the
asset graph's launch dialog and materialise it; the result's page shows SIMULATED and the power trace without
a click; the efficiency report is a table; the run's row is in DuckDB."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from dagster_graphql import DagsterGraphQLClient

from llem_pipeline.defs.experiments.partitions import MeasurementKey
from llem_pipeline.storage import ResultStore
from llem_pipeline_tests.e2e.conftest import study_keys, today
from llem_pipeline_tests.e2e.dagster_server import DagsterDevServer
from llem_pipeline_tests.e2e.test_graphql import wait_for_run

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]


def test_materialise_a_partition_from_the_asset_graph(dagster_server: DagsterDevServer, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.is_file(), "Debian chromium is required: apt-get install -y chromium"
    key = study_keys("demo")[0]
    config_hash = MeasurementKey.parse(key).config_hash
    assert key.startswith("demo~batch_size=1~sim~")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        # every wait below returns as soon as its element shows; 120 s (instead of Playwright's 30 s) only bounds
        # a UI that never shows it, so a machine busy with other work slows the test down but does not fail it
        page.set_default_timeout(120_000)
        try:
            # the "Join the Dagster community" modal may pop up at any moment: dismiss it whenever it does
            page.add_locator_handler(page.get_by_text("Join the Dagster community"),
                                     lambda _: page.get_by_role("button", name="Skip").click())
            page.goto(f"{dagster_server.url}/locations/llem_pipeline/jobs/measure_experiments",
                      wait_until="networkidle")
            page.get_by_text("View as Asset Graph").wait_for()
            page.get_by_role("button", name="Materialize all").first.click()
            dialog = page.get_by_role("dialog")
            dialog.get_by_text("Select a partition or create one").first.click()
            # partitions are listed by readable keys: study, swept value, hardware target
            page.get_by_placeholder("Filter partitions").fill("demo~batch_size=1")
            page.locator("span", has_text=key).first.click()
            page.keyboard.press("Escape")
            dialog.get_by_role("button", name="Latest").click()
            dialog.get_by_role("button", name="Launch 1 run").click()
            page.get_by_text(re.compile(r"Launched run")).first.wait_for()
            view = page.get_by_role("button", name="View", exact=True).or_(page.get_by_role("link", name="View", exact=True))
            view.first.click()
            page.wait_for_url(re.compile(r".*/runs/[0-9a-f-]{36}.*"))
            run_id = re.search(r"/runs/([0-9a-f-]{36})", page.url).group(1)
            client = DagsterGraphQLClient("127.0.0.1", port_number=dagster_server.port)
            status = wait_for_run(client, run_id)
            assert status == "SUCCESS", dagster_server.log_tail()
            page.get_by_text("Success", exact=True).first.wait_for()
            page.screenshot(path=str(tmp_path / "run_success.png"))
            # the result's page says SIMULATED and shows the power trace, both without a click
            page.goto(f"{dagster_server.url}/assets/experiment_results", wait_until="networkidle")
            page.get_by_text("SIMULATED · simulated:sim-gpu:x1").first.wait_for()
            page.get_by_text("a software model, not a GPU measurement", exact=False).first.wait_for()
            image = page.locator("img[src^='data:image/png;base64,']").first
            image.wait_for()
            assert image.evaluate("e => e.naturalWidth") >= 100
            # the efficiency report is a table (with the SIMULATED marker per row), not a markdown blob
            report_id = client.submit_job_execution("refresh_efficiency_report", repository_location_name="llem_pipeline",
                                                    repository_name="__repository__")
            assert wait_for_run(client, report_id) == "SUCCESS", dagster_server.log_tail()
            page.goto(f"{dagster_server.url}/assets/efficiency_report", wait_until="networkidle")
            page.get_by_role("columnheader", name="j_per_token").first.wait_for()
            page.get_by_role("cell", name="SIMULATED").first.wait_for()
            page.get_by_role("cell", name="batch_size=1").first.wait_for()
            page.screenshot(path=str(tmp_path / "efficiency_report.png"))
        finally:
            page.screenshot(path=str(tmp_path / "last_page.png"))
            browser.close()
    rows = ResultStore(dagster_server.data_dir / "llem.duckdb").query(
        "SELECT config_hash, CAST(run_date AS VARCHAR) AS d, study FROM experiment_results WHERE run_id = ?",
        [run_id],
    ).to_pylist()
    assert rows == [{"config_hash": config_hash, "d": today(), "study": "demo"}]
