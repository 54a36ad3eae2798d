"""The MLflow UI in a real browser: Debian's headless Chromium driven by Playwright. Used by
tests/system/test_browser.py and by experiments/ui_screenshot.py (the README's screenshots), so the
pictures come from the code the test checks."""

import shutil
from pathlib import Path

from playwright.sync_api import sync_playwright

# Expand every parent run so its nested steps show, and close the assistant side panel.
EXPAND = """() => {
  const buttons = document.querySelectorAll('button[data-component-id*=runnamecellrenderer]');
  buttons.forEach(b => b.click());
  document.querySelectorAll('button[data-component-id="mlflow.assistant.chat_panel.close"]').forEach(b => b.click());
  return buttons.length; }"""


def chromium():
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise RuntimeError("Chromium is not installed (Debian: apt-get install chromium; `make test` does)")
    return found


def ui_pages(url, experiment_id, *, parent_name, report_run_id, shots=None, timeout_ms=90_000):
    """Open the experiment's runs page (parents expanded) and an evaluate run's report.html in
    MLflow's artifact viewer. Returns (runs page text, report text) as rendered; with `shots`
    (a folder) also saves mlflow-runs.png and mlflow-report.png there."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 860})
            page.goto(f"{url}/#/experiments/{experiment_id}/runs")
            page.get_by_text(parent_name).first.wait_for(timeout=timeout_ms)
            page.evaluate(EXPAND)
            page.wait_for_timeout(3000)
            runs_text = page.inner_text("body")
            if shots:
                page.screenshot(path=str(Path(shots) / "mlflow-runs.png"))
            page.goto(f"{url}/#/experiments/{experiment_id}/runs/{report_run_id}/artifacts/report/report.html")
            report = page.frame_locator("iframe.mlflow-html-iframe")
            report.get_by_text("Headline").first.wait_for(timeout=timeout_ms)
            page.evaluate(EXPAND)  # the assistant panel again
            page.wait_for_timeout(1000)
            report_text = report.locator("body").inner_text()
            if shots:
                page.screenshot(path=str(Path(shots) / "mlflow-report.png"))
            return runs_text, report_text
        finally:
            browser.close()
