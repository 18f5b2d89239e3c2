"""Real-browser test of issue 21's loop: in the Test inspector, mark a false positive as normal (a
taught new version), save the slider's threshold as a new version made the default; then a reload
shows that version, and ``predict`` and ``evaluate`` use it. The page URL names each new version
(``model=<base>-vN``, its own ``thr=``) so a reload opens it; while the new version is scored the page
shows the progress alone (no counts of the parent left next to it).

Runs on its own copy of the small dashboard model (writes new versions), on its own server.
Skips when chromium or playwright is missing.
"""
from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from test_browser import ARGS, CHROMIUM, SHOTS, _serve, _no_exception


METRIC = "[data-testid='stMetric']"
SCORING = "Scoring the test images of 'tiles'"


@pytest.fixture(scope="module")
def teach_env(tmp_path_factory, dash_model_env, dash_eval, demo_root):
    """``(models_dir, url, fp_name, thr)``: a server on a copy of the small model, with a threshold
    just under the highest-scored good test image (so that image is a false positive)."""
    models = tmp_path_factory.mktemp("teach_models")
    shutil.copytree(dash_model_env[1], models / "tiles" / "small")
    good = np.flatnonzero(dash_eval.labels == 0)
    worst = int(good[np.argmax(dash_eval.scores[good])])
    sample = dash_eval.samples[worst]
    thr = float(dash_eval.scores[worst]) - 1e-3
    serving = _serve({"SOMAD_DATA_DIR": str(demo_root), "SOMAD_MODELS_DIR": str(models), "SOMAD_READ_ONLY": ""})
    url = next(serving)
    yield models, url, f"{sample.defect}/{sample.path.name}", thr
    next(serving, None)


def test_mark_fp_as_normal_save_threshold_then_reload_predict_evaluate(teach_env, demo_root, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    models, url, fp_name, thr = teach_env
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2400})
        page.set_default_timeout(300_000)  # the first visit may wait for a scoring job
        page.goto(f"{url}/test_inspector?model=small&image={fp_name}&thr={thr:.6g}")
        page.get_by_text(f"{fp_name}: score").wait_for()
        page.get_by_text(f"{fp_name}: score").filter(has_text="→ FP").wait_for()  # it is a false positive
        # 1. mark the FP shown as normal: preview, then a new version
        page.get_by_text("Mark as normal", exact=True).click()
        page.get_by_role("button", name="Preview the scores after").click()
        page.get_by_text("(the taught images join its cross-fitting)").wait_for()
        page.get_by_role("button", name="Mark 1 as normal: save a new version").click()
        # while the new version is scored, the page shows the progress only: no outcome counts of the
        # parent left next to it (they stayed on screen, greyed, for the whole scoring job)
        page.get_by_text("Scoring the test images of 'tiles'").wait_for()
        page.wait_for_function(f"() => [...document.querySelectorAll(\"{METRIC}\")].every(e => !e.getClientRects()"
                               f".length) && document.body.innerText.includes({SCORING!r})", timeout=60_000)
        page.get_by_text("Taught 1 image as normal").wait_for()
        _no_exception(page)
        taught = [d for d in (models / "tiles").iterdir() if d.is_dir() and not d.name.startswith(".")
                  and d.name != "small"]
        assert len(taught) == 1, taught
        taught = taught[0]
        prov = json.loads((taught / "config.json").read_text())["provenance"]
        assert prov["kind"] == "teach" and [Path(a["path"]).name for a in prov["added"]] == [Path(fp_name).name]
        # the taught test image now leaks: the page says so
        page.get_by_text("was taught to this model (a leak)").wait_for()
        # the page URL names the new version, so a reload opens it (not the parent)
        assert re.fullmatch(r"small-v\d+", taught.name), taught.name  # <base>-vN
        _wait_url_model(page, taught.name)
        taught_thr = float(json.loads((taught / "config.json").read_text())["threshold"])
        assert _query(page)["thr"] == [f"{taught_thr:.6g}"], page.url  # its own threshold, not the link's
        page.reload()
        page.get_by_text("was taught to this model (a leak)").wait_for()
        expect(page.locator("[data-testid='stSidebar']")).to_contain_text(taught.name)
        assert _query(page)["model"] == [taught.name], page.url
        # 2. save the slider's threshold as a new version, made the default
        page.get_by_text("Save this threshold as a new version", exact=True).click()
        page.get_by_text("Make it the category's default").click()
        page.get_by_role("button", name="Save this threshold", exact=True).click()
        page.get_by_text("as the new version").wait_for()
        _no_exception(page)
        names = {d.name for d in (models / "tiles").iterdir() if d.is_dir() and not d.name.startswith(".")}
        (saved_name,) = names - {"small", taught.name}
        saved = models / "tiles" / saved_name
        cfg = json.loads((saved / "config.json").read_text())
        value = float(cfg["threshold"])
        assert cfg["provenance"]["kind"] == "threshold" and cfg["provenance"]["rule"]
        assert (models / "tiles" / ".default").read_text().strip() == saved_name
        # 3. the URL names the saved version; a reload opens it with its threshold
        _wait_url_model(page, saved_name)
        page.reload()
        page.get_by_text("Click a pixel of the heatmap").wait_for()
        expect(page.locator("[data-testid='stSidebar']")).to_contain_text(saved_name)
        expect(page.locator("[data-testid='stSidebar']")).to_contain_text(f"threshold {value:.3f}")
        assert _query(page)["model"] == [saved_name], page.url
        _no_exception(page)
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "teach_and_save_threshold.png"), full_page=True)
        browser.close()
    # 4. predict and evaluate use the new version (the CLI's own entry, in this process)
    from somad.cli import main

    image = demo_root / "tiles" / "test" / fp_name
    out = tmp_path / "pred"
    assert main(["predict", "--model-dir", str(saved), "--out", str(out), "--no-overlays", str(image)]) == 0
    row = next(csv.DictReader(open(out / "predictions.csv")))
    assert row["verdict"] == ("anomalous" if float(row["score"]) >= value else "normal")
    res = tmp_path / "results"
    assert main(["evaluate", "--data-dir", str(demo_root), "--category", "tiles", "--models-dir", str(models),
                 "--results-dir", str(res), "--figures", "0"]) == 0
    metrics = json.loads((res / "tiles" / "metrics.json").read_text())
    assert Path(metrics["model_dir"]).name == saved_name and metrics["threshold"] == pytest.approx(value)
    # the FP taught to its parent is in the test split: evaluate reports it, as the Test inspector does
    assert metrics["n_taught_test"] == 1 and metrics["taught_test"] == [fp_name]
    assert metrics["without_taught"]["n_test"] == metrics["n_test"] - 1


def _query(page) -> dict[str, list[str]]:
    return parse_qs(urlparse(page.url).query)


def _wait_url_model(page, name: str) -> None:
    """Wait until the page URL's ``model=`` is ``name`` (Playwright's own wait, no sleep)."""
    page.wait_for_url(lambda url: parse_qs(urlparse(url).query).get("model") == [name], timeout=60_000)
