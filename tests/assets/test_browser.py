"""``make ui`` in a real browser: headless Chromium drives the Dagster UI that ``dagster dev`` serves (webserver and
daemon) on the project's instance configuration, with the instance, the storage root and the catalog in tmp dirs.

It opens the ``manifest`` group's asset graph, launches one ``manifest`` partition from the asset page's
Materialize dialog (the controls a user clicks, found by their visible text), follows the run to success, and checks
that the Automation page lists every sensor and schedule of ``assets.definitions.defs``. Screenshots of the graph,
the launch dialog, the finished run and the Automation page are written to the test's tmp dir.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cough_pipeline.schema import COVID_DATASETS
from tests.assets.test_ui import free_port, graphql
from tests.processes import child_process, log_tail

REPO = Path(__file__).resolve().parents[2]
#: The code location's name in the UI: ``workspace.yaml`` loads the ``assets.definitions`` module.
LOCATION = "assets.definitions"
#: The dataset partition launched from the UI: the quickest on the demo corpus (16 files, under a second in-process).
PARTITION = "aicovidvn"
STARTUP_TIMEOUT = 180
UI_TIMEOUT = 60
RUN_TIMEOUT = 300
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}
HEADLESS_FLAGS = ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000")
#: A screenshot of a rendered 1600 × 1000 page is tens of kB; a blank or failed capture is a few hundred bytes.
MIN_SCREENSHOT_BYTES = 10_000

pytestmark = pytest.mark.slow


def browser_binaries() -> tuple[str, str]:
    """(chromium, chromedriver), or a skip naming what is missing."""
    pytest.importorskip("selenium", reason="selenium is not installed (make install adds it)")
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    missing = [name for name, path in (("chromium", chromium), ("chromium-driver", driver)) if path is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (make system-deps installs the Debian packages)")
    return chromium, driver


def wait_for_webserver(port: int, server, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
            return
        except OSError:
            assert server.poll() is None, f"dagster dev exited with {server.returncode}:\n{log_tail(log)}"
            assert time.monotonic() < deadline, f"the UI did not start within {STARTUP_TIMEOUT} s:\n{log_tail(log)}"
            time.sleep(1)


def run_status(port: int, run_id: str) -> str:
    result = graphql(port, f'{{ runOrError(runId: "{run_id}") {{ __typename ... on Run {{ status }} }} }}')
    return result["runOrError"].get("status") or result["runOrError"]["__typename"]


def partition_runs(port: int, partition: str) -> list[dict]:
    """The runs of ``partition`` (id and tags), newest first."""
    query = (
        f'{{ runsOrError(filter: {{ tags: [{{ key: "dagster/partition", value: "{partition}" }}] }}) '
        "{ ... on Runs { results { runId tags { key value } } } } }"
    )
    return graphql(port, query)["runsOrError"]["results"]


def run_problems(port: int, run_id: str) -> str:
    """The run's error and warning events (messages and errors), one per line, for a failure message."""
    query = (
        f'{{ logsForRun(runId: "{run_id}") {{ ... on EventConnection {{ events {{ __typename '
        "... on MessageEvent { message level stepKey } ... on ErrorEvent { error { message cause { message "
        "cause { message } } } } } } } }"
    )
    events = graphql(port, query)["logsForRun"].get("events", [])
    lines = []
    for event in events:
        error, cause = "", event.get("error")
        while cause:  # Dagster wraps the step's own error: show the chain down to it
            error, cause = f"{error} {cause['message'].strip()}", cause.get("cause")
        if event.get("level") in ("ERROR", "CRITICAL", "WARNING") or error:
            lines.append(f"{event['__typename']} [{event.get('stepKey') or '-'}] {event.get('message', '')} {error}")
    return "\n".join(lines) or "(no error events)"


def automation_names() -> list[str]:
    """Every sensor and schedule the code location defines, as the UI names them."""
    from assets.definitions import defs

    repository = defs.get_repository_def()
    return sorted({*(s.name for s in repository.sensor_defs), *(s.name for s in repository.schedule_defs)})


def screenshot(driver, path: Path) -> Path:
    assert driver.save_screenshot(str(path)), f"no screenshot written to {path}"
    print(f"screenshot: {path}")
    return path


def test_ui_launches_a_partition_and_lists_the_automations(tmp_path):
    chromium, chromedriver = browser_binaries()
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException, WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    names = automation_names()
    assert {"raw_data_sensor", "pipeline_failure_alerts"} <= set(names), names

    # The instance runs on the project's dagster.yaml (queued runs, the project's run launcher, run monitoring), as
    # `make ui` does; runs, tables and the catalog all land under tmp_path, never in the repository's dagster_home.
    home, storage = tmp_path / "dagster_home", tmp_path / "storage"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "COUGH_PIPELINE_STORAGE": str(storage),
        "COUGH_PIPELINE_CATALOG": str(storage / "warehouse.duckdb"),
    }
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "dagster_dev.log"
    dagster = str(Path(sys.executable).with_name("dagster"))
    command = [dagster, "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
    shots: dict[str, Path] = {}

    with child_process(command, log, cwd=REPO, env=env) as server:
        wait_for_webserver(port, server, log)
        # The first visit to a local instance opens a "Join the Dagster community" dialog over the page a second
        # after it loads; record it as seen, as its Skip button would, so it never covers a control the test clicks.
        assert graphql(port, "mutation { setNuxSeen }")["setNuxSeen"] is True

        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in HEADLESS_FLAGS:
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(chromedriver))
        try:
            wait = WebDriverWait(driver, UI_TIMEOUT, poll_frequency=0.25)

            # Every XPath starts at <body>: the document's <title> also holds text, and it is never visible.
            def visible(xpath: str, what: str):
                located = (By.XPATH, f"/html/body{xpath}")
                return wait.until(EC.visibility_of_element_located(located), f"not shown: {what}")

            def shown(xpath: str) -> list:
                return [e for e in driver.find_elements(By.XPATH, f"/html/body{xpath}") if e.is_displayed()]

            def ticked(xpath: str) -> bool:
                """Whether the (visually hidden) checkbox input inside the element at ``xpath`` is checked."""
                return driver.find_element(By.XPATH, f"/html/body{xpath}//input[@type='checkbox']").is_selected()

            def click(xpath: str, what: str) -> None:
                located = (By.XPATH, f"/html/body{xpath}")
                wait.until(EC.element_to_be_clickable(located), f"not clickable: {what}").click()

            try:
                # 1. The global asset graph (Lineage), filtered to the manifest group as its search box would, renders
                # the group's asset nodes (a node's name carries a tooltip; the sidebar's list of names does not).
                driver.get(f"{base}/asset-groups~group%3Amanifest/")
                visible("//*[normalize-space()='Global asset lineage']", "the lineage page's title")
                for asset in ("manifest", "manifest_quarantine"):
                    visible(f"//*[@data-tooltip='{asset}'][normalize-space()='{asset}']", f"asset node {asset}")
                # A node's footer says "Loading…" until its status has loaded, then (partitioned) "6 partitions".
                visible(f"//*[normalize-space()='{len(COVID_DATASETS)} partitions']", "the manifest node's partitions")
                wait.until(
                    lambda _: not shown("//*[starts-with(normalize-space(text()), 'Loading')]"),
                    "the asset nodes' status did not finish loading",
                )
                shots["asset_graph"] = screenshot(driver, tmp_path / "asset_graph.png")

                # 2. The manifest asset's page.
                driver.get(f"{base}/assets/manifest")
                visible("//*[normalize-space()='One row per usable audio file, in the harmonised schema.']", "desc")

                # 3. Materialize… → (manifest and manifest_quarantine are one multi-asset: confirm both) → the launch
                # dialog → Custom partition selection → one partition → Launch 1 run.
                click("//button[starts-with(normalize-space(), 'Materialize')]", "the Materialize… button")
                dialog = "//*[@role='dialog']"
                confirm = f"{dialog}//button[normalize-space()='Confirm']"
                launch_dialog = f"{dialog}[.//*[normalize-space()='Partition selection']]"
                wait.until(
                    lambda _: shown(confirm) or shown(launch_dialog),
                    "the Materialize button opened neither the launch dialog nor the multi-asset confirmation",
                )
                for button in shown(confirm)[:1]:
                    button.click()
                visible(launch_dialog, "the launch dialog's partition selection")
                # The dialog opens on all partitions or on none (it varies); Custom keeps that selection editable in
                # the picker, whose menu has one checkbox item per partition: tick PARTITION, untick the others.
                click(f"{launch_dialog}//button[normalize-space()='Custom']", "the Custom partition selection")
                click(f"{launch_dialog}//*[@aria-haspopup='dialog']", "the partition picker")
                for partition in COVID_DATASETS:
                    item = f"{dialog}//*[@role='menuitem'][.//span[normalize-space()='{partition}']]"
                    want = partition == PARTITION
                    visible(item, f"partition {partition} in the picker")
                    if ticked(item) != want:
                        click(item, f"partition {partition}")
                        wait.until(
                            lambda _, item=item, want=want: ticked(item) == want,
                            f"partition {partition} did not become {'ticked' if want else 'unticked'}",
                        )
                driver.switch_to.active_element.send_keys(Keys.ESCAPE)  # closes the picker, not the dialog
                launch = f"{launch_dialog}//button[normalize-space()='Launch 1 run']"
                visible(launch, "the 'Launch 1 run' button (exactly one partition selected)")
                shots["launch_dialog"] = screenshot(driver, tmp_path / "launch_dialog.png")
                click(launch, "Launch 1 run")

                # The UI confirms the launch in a toast naming the run (it is gone after a few seconds).
                toast = visible("//*[starts-with(normalize-space(), 'Launched run')]", "the 'Launched run' toast").text
                runs = wait.until(
                    lambda _: partition_runs(port, PARTITION), f"no run of {PARTITION} was created ({toast!r})"
                )
                assert len(runs) == 1, f"one launch created {len(runs)} runs of {PARTITION}: {runs}"
                run_id, tags = runs[0]["runId"], {tag["key"]: tag["value"] for tag in runs[0]["tags"]}
                assert run_id[:8] in toast, f"the toast {toast!r} names another run than {run_id}"
                assert tags.get("dagster/from_ui") == "true", tags
                print(f"launched run {run_id}")
                driver.get(f"{base}/runs/{run_id}")

                # 4. The daemon dequeues the run and it succeeds.
                deadline = time.monotonic() + RUN_TIMEOUT
                while (status := run_status(port, run_id)) not in TERMINAL and time.monotonic() < deadline:
                    time.sleep(2)
                assert status == "SUCCESS", (
                    f"run {run_id} of {PARTITION} is {status or 'unknown'} (after at most {RUN_TIMEOUT} s)\n"
                    f"its error events:\n{run_problems(port, run_id)}\n"
                    f"dagster dev log tail:\n{log_tail(log, 6000)}"
                )
                assert (storage / "tables" / "manifest" / f"{PARTITION}.parquet").is_file(), sorted(
                    str(p.relative_to(storage)) for p in storage.rglob("*.parquet")
                )
                # The run's page shows the outcome too (its header's status tag).
                wait.until(EC.title_contains("[SUCCESS]"), f"the run page's title is {driver.title!r}")
                visible("//*[normalize-space()='Success']", "the run's Success status")
                visible(f"//*[normalize-space()='partition: {PARTITION}']", "the run's partition tag")
                shots["run"] = screenshot(driver, tmp_path / "run.png")

                # 5. The Automation page lists every sensor and schedule of the definitions.
                driver.get(f"{base}/automation")
                visible(f"//*[normalize-space(text())='{LOCATION}']", "the code location on the Automation page")

                def unlisted() -> list[str]:
                    return [name for name in names if not shown(f"//*[normalize-space(text())='{name}']")]

                try:
                    wait.until(lambda _: not unlisted())
                except TimeoutException:
                    pass
                missing = unlisted()
                # Each row's on/off switch appears once the instance's state of that sensor or schedule has loaded.
                switches = "label[class*='formatSwitch'] input[type='checkbox']"
                wait.until(
                    lambda _: missing or len(driver.find_elements(By.CSS_SELECTOR, switches)) >= len(names),
                    "the Automation page did not show an on/off switch for every sensor and schedule",
                )
                shots["automation"] = screenshot(driver, tmp_path / "automation.png")
                assert not missing, (
                    f"the Automation page does not list {missing} (defined: {names}); it shows:\n"
                    + driver.find_element(By.TAG_NAME, "body").text
                )
            except BaseException:
                print(f"dagster dev log tail:\n{log_tail(log, 6000)}")
                try:
                    screenshot(driver, tmp_path / "failure.png")
                    print(f"page {driver.current_url}:\n{driver.find_element(By.TAG_NAME, 'body').text[:4000]}")
                except WebDriverException as error:
                    print(f"the browser could not show the page: {error}")
                raise
        finally:
            driver.quit()

    for name, path in shots.items():
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n"), f"{name}: {path} is not a PNG"
        assert len(data) > MIN_SCREENSHOT_BYTES, f"{name}: {path} has only {len(data)} bytes"
    assert set(shots) == {"asset_graph", "launch_dialog", "run", "automation"}
