"""Real-browser test of server-side jobs: a fit started in one tab goes on after that tab closes and
appears in a second session's model list without a reload. Skips without chromium or playwright."""
from __future__ import annotations

import pytest

from somad import jobs

from test_browser import ARGS, CHROMIUM, _serve


@pytest.fixture()
def jobs_server(tmp_path, demo_root):
    models = tmp_path / "models"  # empty: the Model page offers the one-click demo fit
    serving = _serve({"SOMAD_DATA_DIR": str(demo_root), "SOMAD_MODELS_DIR": str(models)})
    url = next(serving)
    yield url, models
    next(serving, None)
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
