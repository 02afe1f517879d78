"""The report in a real browser: headless Chromium (Debian's `chromium`), driven by Playwright for Python.

Playwright is pointed at the system binary (`executable_path`); `playwright install` is never run, so
no browser is downloaded. The test skips only when no Chromium binary is on PATH; `.ci/run` installs one.
"""

from __future__ import annotations

import json
import shutil

import pytest

from distillery.report import write_report
from tests.test_report import TASKS, invoke, run_eval, run_restart_eval

CHROMIUM = next((path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary on PATH (chromium, chromium-browser or "
                                "google-chrome); .ci/run installs Debian's chromium")
PAGE_SIZE = 5


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """A step-escalating eval through the CLI, and a restarting one, each rendered; (eval.json, html) pairs."""
    directory = tmp_path_factory.mktemp("browser")
    out, _ = run_eval(directory)
    result = invoke("report", out, "--page-size", PAGE_SIZE)
    assert result.exit_code == 0, result.output
    restart = run_restart_eval(directory / "restart")
    return (out, out.with_suffix(".html")), (restart, write_report(restart).path)


@pytest.fixture(scope="module")
def browser(reports):
    # After `reports`: Playwright's sync API keeps an event loop running, and the evals need asyncio.run.
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # a test dependency: a failure, not a skip
        pytest.fail("playwright is not installed: pip install -e '.[test]' (no `playwright install` is needed)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


def open_report(browser, path):
    """A page showing the report, and the console errors, page errors and non-file requests it produced."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda message: problems.append(f"console {message.type}: {message.text}")
            if message.type in ("error", "warning") else None)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("request", lambda request: problems.append(f"request: {request.url}")
            if not request.url.startswith(("file:", "data:", "about:")) else None)
    page.goto(path.resolve().as_uri())
    page.wait_for_selector("#trajectories details.trajectory")
    return page, problems


def visible(page) -> int:
    return page.locator("#trajectories details.trajectory").count()


def test_the_report_in_chromium(browser, reports):
    (eval_json, html), _ = reports
    results = json.loads(eval_json.read_text())
    page, problems = open_report(browser, html)

    # The summary shows the eval JSON's figures.
    for row in results["rows"]:
        cells = page.locator(f'tr[data-row="{row["name"]}"]')
        assert cells.locator('[data-metric="success"]').inner_text() == f"{100 * row['success']:.1f}%"
        assert cells.locator('[data-metric="cost_per_1k_usd"]').inner_text() == f"${row['cost_per_1k_usd']:.4f}"
        assert cells.locator('[data-metric="task_escalation_rate"]').inner_text() == f"{100 * row['task_escalation_rate']:.1f}%"
        if row["kind"] == "run":
            assert cells.locator('[data-metric="step_escalation_rate"]').inner_text() == f"{100 * row['step_escalation_rate']:.1f}%"
    cascade = page.locator('tr[data-row="cascade (calibrated)"]')
    assert cascade.locator('[data-metric="apgr"]').inner_text() == f"{results['routing']['apgr']:.3f}"
    assert cascade.locator('[data-metric="cpt95%"]').inner_text() == f"{100 * results['routing']['cpt']['95%']:.1f}%"

    # The viewer: pages of PAGE_SIZE; each filter changes what is shown.
    n = len(TASKS)
    assert visible(page) == PAGE_SIZE and f"of {n} matching" in page.inner_text("#viewer-count")
    page.select_option("#filter-escalated", "yes")
    assert page.inner_text("#viewer-count").startswith("Showing 1–5 of 9 matching")
    assert page.locator('#trajectories details.trajectory[data-escalated="no"]').count() == 0
    page.click("#page-next")
    assert visible(page) == 4 and page.locator('#trajectories details[data-escalated="yes"]').count() == 4
    page.select_option("#filter-escalated", "")
    page.select_option("#filter-outcome", "failed")
    assert visible(page) == 5 and "of 6 matching" in page.inner_text("#viewer-count")
    assert page.locator('#trajectories details.trajectory[data-ok="yes"]').count() == 0
    page.select_option("#filter-family", "audit")
    page.select_option("#filter-outcome", "")
    assert "of 6 matching" in page.inner_text("#viewer-count")
    page.select_option("#filter-family", "")
    page.select_option("#filter-task-tier", "1")
    assert "of 6 matching" in page.inner_text("#viewer-count")
    page.select_option("#filter-task-tier", "")
    page.fill("#filter-text", "SKU-5")
    page.wait_for_function("document.getElementById('viewer-count').textContent.includes('of 3 matching')")
    page.fill("#filter-text", "")
    page.select_option("#filter-escalated", "yes")

    # An escalation point: the student's rejected proposal beside the teacher's step, with confidence and threshold.
    page.locator("#trajectories details.trajectory > summary").first.click()
    escalation = page.locator("#trajectories details[open] .escalation").first
    escalation.wait_for()
    proposal = escalation.locator('[data-testid="proposal"]').inner_text()
    taken = escalation.locator('[data-testid="taken"]').inner_text()
    assert "Rejected proposal: tier 1 (fake:student)" in proposal
    assert 'get_stock({"sku": "SKU-9"})' in proposal and "confidence 0.135 < threshold 0.500" in proposal
    assert "Step taken: by tier 2 (fake:teacher)" in taken
    assert 'get_stock({"sku": "SKU-3"})' in taken and "get_stock → 7" in taken
    assert problems == []
    page.close()


def test_a_restart_shows_the_doubted_student_step_beside_the_restart(browser, reports):
    _, (_, html) = reports
    page, problems = open_report(browser, html)
    page.select_option("#filter-escalated", "yes")
    assert visible(page) == 1
    page.locator("#trajectories details.trajectory > summary").first.click()
    escalation = page.locator("#trajectories details[open] .escalation").first
    escalation.wait_for()
    proposal = escalation.locator('[data-testid="proposal"]').inner_text()
    # The cascade recorded the abandoned attempt, so the viewer shows it as it was.
    assert "Rejected: step 2 of the abandoned attempt (fake:student)" in proposal and "Maybe 7." in proposal
    assert "confidence 0.135 < threshold 0.500" in proposal and "restarted from the query at tier 2" in proposal
    assert "Step taken: by tier 2 (fake:teacher)" in escalation.locator('[data-testid="taken"]').inner_text()
    assert "abandoned attempt" in page.inner_text("#trajectories details[open] .restart")
    assert problems == []
    page.close()
