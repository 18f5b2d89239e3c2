"""Server-side jobs (somad/jobs.py) and the on-disk cache of test-split scores (somad/scorecache.py)."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from somad import jobs, scorecache
from somad.errors import ParameterError, SomadError

from conftest import TINY


def _wait(models, job_id, until=lambda j: not j.active, limit=600):
    deadline = time.time() + limit
    while time.time() < deadline:
        info = jobs.job_info(models, job_id)
        if until(info):
            return info
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} stayed {jobs.job_info(models, job_id)}")


def _fit_argv(root, models, name, **override):
    params = {k: v for k, v in TINY.items() if k != "batch_size"} | override
    return ["fit", "--data-dir", str(root), "--category", "tiles", "--models-dir", str(models), "--name", name,
            *sum(([f"--{k.replace('_', '-')}", str(v)] for k, v in params.items()), [])]


def test_bad_command_is_refused_before_any_process(tmp_path):
    with pytest.raises(ParameterError, match="unrecognized arguments: --bogus"):
        jobs.submit(tmp_path, ["fit", "--bogus"], kind="fit", title="x")
    assert jobs.list_jobs(tmp_path) == []


def test_max_jobs_from_the_environment(monkeypatch):
    monkeypatch.setenv(jobs.MAX_JOBS_ENV, "3")
    assert jobs.max_jobs() == 3
    monkeypatch.setenv(jobs.MAX_JOBS_ENV, "0")
    with pytest.raises(ParameterError, match="SOMAD_MAX_JOBS"):
        jobs.max_jobs()


def test_file_progress_reports_stage_count_and_time_left(tmp_path):
    fp = jobs.FileProgress(tmp_path / "p.json", every=0)
    fp.stage_start = fp.last = time.time() - 10  # the stage began 10 s ago
    fp("score", 20, 100)
    rec = json.loads((tmp_path / "p.json").read_text())
    assert (rec["stage"], rec["done"], rec["total"]) == ("score", 20, 100)
    assert 39 < rec["eta_s"] < 41  # 10 s for 20 images: 80 left take about 40 s
    fp.result("/x/y")
    assert json.loads((tmp_path / "p.json").read_text())["result"] == "/x/y"
    assert jobs.format_eta(75) == "about 1 min 15 s left" and jobs.format_eta(None) == ""


def test_fit_job_queue_cancel_leaves_nothing(tmp_path, demo_root, monkeypatch):
    """Two jobs with one slot: the second waits; cancelling the running fit leaves no model and no
    temporary folder; the queued one then runs to the end."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))  # the fit's patch file goes here
    monkeypatch.setenv(jobs.MAX_JOBS_ENV, "1")
    models = tmp_path / "models"
    # 3000 epochs keep the SOM stage running for about 12 s on 2 cores (3 epochs end it in 0.1 s, which
    # a loaded CI machine's poll below can miss entirely): the cancel lands mid-fit, after the patch file
    first = jobs.submit(models, _fit_argv(demo_root, models, "a", epochs=3000), kind="fit", title="fit a")
    second = jobs.submit(models, ["demo-data", "--out", str(tmp_path / "demo2")], kind="demo", title="demo")
    assert [j.id for j in jobs.list_jobs(models)] == [second, first]  # newest first
    running = _wait(models, first, lambda j: j.stage == "som" or not j.active)
    assert running.status == "running", running
    assert jobs.job_info(models, second).status == "queued"  # one slot: it waits
    jobs.cancel(models, first)
    info = jobs.job_info(models, first)
    assert info.status == "cancelled" and info.finished is not None
    assert not (models / "tiles" / "a").exists()
    assert [p.name for p in (models / "tiles").iterdir()] == [] if (models / "tiles").exists() else True
    assert list(tmpdir.glob("somad-*")) == []  # the patch file's folder is gone too
    done = _wait(models, second)
    assert done.status == "done", done.error
    assert (tmp_path / "demo2" / "tiles" / "train" / "good").is_dir()
    with pytest.raises(SomadError, match="already finished"):
        jobs.cancel(models, second)


def test_job_whose_process_died_is_failed(tmp_path):
    job_id = jobs.submit(tmp_path, ["demo-data", "--out", str(tmp_path / "d")], kind="demo", title="demo")
    pgid = int((jobs.jobs_dir(tmp_path) / job_id / jobs.PID).read_text())
    os.killpg(pgid, signal.SIGKILL)  # as if the machine lost it: no chance to write its state
    info = _wait(tmp_path, job_id)
    assert info.status == "failed" and "ended without finishing" in info.error


def test_cli_jobs_list_and_cancel(tmp_path, capsys):
    from somad.cli import main

    assert main(["jobs", "list", "--models-dir", str(tmp_path)]) == 0
    assert "no jobs" in capsys.readouterr().out
    assert main(["jobs", "submit", "--models-dir", str(tmp_path), "--title", "demo", "--",
                 "demo-data", "--out", str(tmp_path / "d")]) == 0
    (job,) = jobs.list_jobs(tmp_path)
    assert job.title == "demo" and job.argv == ["demo-data", "--out", str(tmp_path / "d")]
    _wait(tmp_path, job.id)
    assert main(["jobs", "list", "--models-dir", str(tmp_path)]) == 0
    assert f"{job.id}  done" in capsys.readouterr().out
    assert main(["jobs", "cancel", "--models-dir", str(tmp_path), job.id]) == 2  # finished: one error line
    assert "already finished" in capsys.readouterr().err


# ------------------------------------------------------------------------------- score cache
def test_score_cache_round_trip_and_invalidation(tmp_path, dash_model_env, demo_root):
    import shutil

    _, model_dir, model = dash_model_env
    root = tmp_path / "data"
    shutil.copytree(demo_root / "tiles", root / "tiles")
    models = tmp_path / "models"
    mine = models / "tiles" / "small"
    shutil.copytree(model_dir, mine)
    with pytest.raises(scorecache.NotCached):
        scorecache.load(mine, root, "tiles")
    entry = scorecache.score_into_cache(mine, root, "tiles")
    assert entry.parent == models / "tiles" / ".scores"
    ev = scorecache.load(mine, root, "tiles")
    from somad.pipeline import evaluate_model

    ref = evaluate_model(model, root, "tiles", return_patches=True)
    np.testing.assert_array_equal(ev.scores, ref.scores)
    np.testing.assert_array_equal(ev.maps, ref.maps)
    np.testing.assert_array_equal(ev.patches.neighbours.numpy(), ref.patches.neighbours.numpy())
    assert ev.metrics["image_auroc"] == ref.metrics["image_auroc"]
    assert [s.path for s in ev.samples] == [s.path for s in ref.samples]
    # a test file changes: the key changes, the cache no longer answers; rescoring replaces the stale entry
    victim = next((root / "tiles" / "test" / "good").iterdir())
    os.utime(victim, ns=(victim.stat().st_atime_ns, victim.stat().st_mtime_ns + 10**9))
    assert not scorecache.is_cached(mine, root, "tiles")
    with pytest.raises(scorecache.NotCached):
        scorecache.load(mine, root, "tiles")
    scorecache.score_into_cache(mine, root, "tiles")
    assert len(list((models / "tiles" / ".scores").iterdir())) == 1
    # the model changes (a refit writes a new config): the cache no longer answers
    cfg = json.loads((mine / "config.json").read_text())
    cfg["saved_at"] = "2000-01-01T00:00:00"
    (mine / "config.json").write_text(json.dumps(cfg))
    assert not scorecache.is_cached(mine, root, "tiles")


def test_fit_argv_round_trips_through_the_cli(tmp_path, demo_root):
    from dashboard.jobs_view import fit_argv
    from somad.cli import build_parser

    params = {"image_size": 64, "grid": (8, 10), "sigma": None, "topology": "hexagonal", "device": "cpu"}
    argv = fit_argv(demo_root, "tiles", tmp_path, "x", params, force=True, max_train=5)
    jobs.check_argv(argv)
    ns = build_parser().parse_args(argv)
    assert (ns.image_size, ns.grid, ns.sigma, ns.topology, ns.force, ns.max_train_images, ns.name) == (
        64, (8, 10), None, "hexagonal", True, 5, "x")
    assert Path(ns.data_dir).is_absolute() and Path(ns.models_dir).is_absolute()
