"""The self-contained HTML report (somad.report) and `python -m somad report`."""
from __future__ import annotations

import re

from somad import report
from somad.cli import main
from somad.explain import failing_order


def test_report_cli_writes_a_self_contained_report(dash_model_env, dash_eval, demo_root, tmp_path, capsys):
    models, model_dir, model = dash_model_env
    out = tmp_path / "r" / "tiles.html"
    assert main(["report", "--data-dir", str(demo_root), "--category", "tiles", "--models-dir", str(models),
                 "--name", "small", "--out", str(out)]) == 0
    assert f"tiles: model {model_dir}: wrote {out}" in capsys.readouterr().out
    text = out.read_text(encoding="utf-8")
    # plotly.js embedded once, no CDN or other remote resource
    assert text.count("Plotly.newPlot(") == 6  # ROC, PRO, histogram, U-matrix, hit map, regions (no replay kept)
    assert len(text) > 3_000_000  # plotly.js itself is about 4.6 MB
    assert not re.search(r"""<(script|link|img)[^>]+(src|href)=["']https?:""", text)
    # metrics, failing images with their heatmaps, per-defect table
    assert f"{dash_eval.metrics['image_auroc']:.4g}" in text
    n_fail = min(report.MAX_FAILING, len(failing_order(dash_eval.labels, dash_eval.scores, model.threshold_)))
    assert text.count('<img alt="heatmap"') == n_fail
    for defect in dash_eval.metrics["per_defect"]:
        assert f"<td>{defect}</td>" in text
    assert "score &gt;= threshold" in text


def test_report_cli_without_model_exits_2_and_writes_nothing(demo_root, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["report", "--data-dir", str(demo_root), "--category", "tiles", "--models-dir",
                 str(tmp_path / "none"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no model for category 'tiles'")
    assert not out.exists()


def test_per_defect_rows_round_and_name_the_metrics():
    rows = report.per_defect_rows({"per_defect": {"crack": {"n_images": 3, "image_auroc": 0.123456,
                                                             "pixel_auroc": 1.0, "aupro": 0.5,
                                                             "image_f1_max": 0.75, "pixel_f1_max": 0.25}}})
    assert rows == [{"defect type": "crack", "images": 3, "Image AUROC": 0.1235, "Pixel AUROC": 1.0,
                     "AUPRO (FPR ≤ 0.3)": 0.5, "Image F1-max": 0.75, "Pixel F1-max": 0.25}]
