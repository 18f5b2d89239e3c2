"""Real-browser test of server-side jobs: a fit started in one tab goes on after that tab closes and
appears in a second session's model list without a reload. Skips without chromium or playwright."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import pytest

from somad import jobs

from test_browser import ARGS, CHROMIUM, REPO, _free_port


@pytest.fixture()
def jobs_server(tmp_path, demo_root):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    models = tmp_path / "models"  # empty: the Model page offers the one-click demo fit
    port = _free_port()
    env = dict(os.environ, SOMAD_DATA_DIR=str(demo_root), SOMAD_MODELS_DIR=str(models),
               STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("streamlit did not start: " + proc.stdout.read().decode(errors="replace")[-2000:])
    yield url, models
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    for job in jobs.list_jobs(models):  # never leave a job process behind
        if job.active:
            jobs.cancel(models, job.id)


def test_fit_goes_on_after_its_tab_closes_and_appears_in_a_second_session(jobs_server):
    from playwright.sync_api import sync_playwright

    url, models = jobs_server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        first = browser.new_context(viewport={"width": 1400, "height": 2000})
        tab = first.new_page()
        tab.set_default_timeout(180_000)
        tab.goto(url)
        tab.get_by_role("button", name="Fit a demo model").click()
        tab.get_by_text("fit tiles → demo").first.wait_for()  # the job list of this session shows it
        (job,) = jobs.list_jobs(models)
        assert job.kind == "fit" and job.active
        first.close()  # the tab that started the fit is gone

        second = browser.new_context(viewport={"width": 1400, "height": 2000})
        other = second.new_page()
        other.set_default_timeout(600_000)
        other.goto(url)
        other.get_by_text("fit tiles → demo").first.wait_for()  # every session lists the job
        assert jobs.job_info(models, job.id).status in ("queued", "running", "done")  # not stopped by the close
        other.evaluate("window.__same_page = true")
        # the fit finishes on the server; the list refreshes itself and the model list shows the new model
        other.get_by_text("✅ finished").first.wait_for()
        other.get_by_role("button", name="Make default").or_(other.get_by_role("button", name="Default")) \
            .first.wait_for()
        assert other.evaluate("window.__same_page === true")  # no reload happened
        assert other.locator("[data-testid='stException']").count() == 0
        browser.close()
    done = jobs.job_info(models, job.id)
    assert done.status == "done", done.error
    assert done.result == str((models / "tiles" / "demo").resolve())
    assert (models / "tiles" / "demo" / "config.json").is_file()
