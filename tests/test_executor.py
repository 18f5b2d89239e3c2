"""Scale-out on Dask distributed (``somad.executor``): a 2-worker LocalCluster gives the same models
and predictions as one process, a failing category or a dying worker does not stop the others, and
every cluster problem is one error line."""
from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from somad.cli import main

TINY_ARGS = ["--image-size", "64", "--d", "32", "--epochs", "2", "--cv-folds", "2", "--batch-size", "4"]


@pytest.fixture(scope="module")
def cluster():
    """A 2-worker LocalCluster (processes, one task at a time each), shared by this module's tests."""
    pytest.importorskip("distributed", reason="the Dask extra (requirements-dask.txt) is not installed")
    from somad.executor import DaskExecutor

    with DaskExecutor(workers=2) as ex:
        yield ex


@pytest.fixture()
def in_process_threads(cluster):
    """This process's torch threads set to the workers' own for the test (a thread count changes
    the order of float sums, so equality is bit for bit only at the same count)."""
    threads = set(cluster.torch_threads().values()) - {None}
    per_task = max(t for t in threads)
    before = torch.get_num_threads()
    torch.set_num_threads(per_task)
    yield per_task
    torch.set_num_threads(before)


def _rows(csv_path: Path) -> list[list[str]]:
    with open(csv_path, newline="") as fh:
        return list(csv.reader(fh))


def test_cluster_fit_and_predict_equal_one_process(cluster, in_process_threads, demo_root, tmp_path, capsys):
    # a root with the demo 'tiles' and a category whose training image is truncated
    root = tmp_path / "data"
    shutil.copytree(demo_root / "tiles", root / "tiles")
    broken = root / "broken" / "train" / "good"
    shutil.copytree(demo_root / "washers" / "train" / "good", broken)
    first = sorted(broken.iterdir())[0]
    first.write_bytes(first.read_bytes()[:200])
    address = cluster.cluster.scheduler_address

    # in one process: tiles fits, broken fails, the run goes on and ends with the table, status 1
    local = tmp_path / "local"
    assert main(["fit", "--data-dir", str(root), "--category", "all", "--models-dir", str(local), *TINY_ARGS]) == 1
    out = capsys.readouterr()
    assert "| tiles | done |" in out.out and "| broken | failed |" in out.out and first.name in out.out
    assert "1 of 2 categories failed: broken" in out.err

    # on the cluster: the same outcome, one task per category
    remote = tmp_path / "remote"
    assert main(["fit", "--data-dir", str(root), "--category", "tiles,broken", "--models-dir", str(remote),
                 *TINY_ARGS, "--scheduler", address]) == 1
    out = capsys.readouterr()
    assert "| tiles | done |" in out.out and "| broken | failed |" in out.out and first.name in out.out
    assert not (remote / "broken").exists() and not (local / "broken").exists()  # no half-written model

    a = load_file(str(local / "tiles" / "default" / "tensors.safetensors"))
    b = load_file(str(remote / "tiles" / "default" / "tensors.safetensors"))
    assert sorted(a) == sorted(b) and len(a) >= 8
    for key in a:
        assert torch.equal(a[key], b[key]), key

    # the cluster's model is an ordinary model dir: listed like any other (what the dashboard shows)
    from somad.store import list_models
    assert [p.name for p in list_models(remote, "tiles")] == ["default"]

    # evaluate on the cluster, several categories the same way (a missing model is refused first)
    assert main(["evaluate", "--data-dir", str(root), "--category", "tiles", "--models-dir", str(remote),
                 "--results-dir", str(tmp_path / "res"), "--figures", "0", "--scheduler", address]) == 0
    metrics = json.loads((tmp_path / "res" / "tiles" / "metrics.json").read_text())
    assert metrics["n_test"] == 12 and 0.0 <= metrics["image_auroc"] <= 1.0
    assert "| tiles |" in capsys.readouterr().out

    # predict: shards of 5 on the workers against one process; same rows (an unreadable file's
    # error row included), same overlays
    images = str(root / "tiles" / "test")
    bad = root / "tiles" / "test" / "good" / "zz_truncated.png"
    bad.write_bytes(first.read_bytes())
    assert main(["predict", "--model-dir", str(local / "tiles" / "default"), images, "--out", str(tmp_path / "pa")]) == 3
    assert main(["predict", "--model-dir", str(remote / "tiles" / "default"), images, "--out", str(tmp_path / "pb"),
                 "--scheduler", address, "--shard-size", "5"]) == 3
    rows_a, rows_b = _rows(tmp_path / "pa" / "predictions.csv"), _rows(tmp_path / "pb" / "predictions.csv")
    assert len(rows_a) == 14 and rows_a == rows_b  # header + 13 files, row for row
    (error,) = [r for r in rows_b if r[2] == "error"]
    assert error[0] == str(bad) and str(bad) in error[4] and error[3] == ""
    for row in [r for r in rows_a[1:] if r[2] != "error"]:
        pa, pb = (np.asarray(Image.open(tmp_path / d / row[3])) for d in ("pa", "pb"))
        assert pa.shape == pb.shape and np.array_equal(pa, pb)

    # each worker loaded the model once, though 3 shards went to 2 workers
    loads = cluster.client.run(lambda: dict(__import__("somad.executor", fromlist=["x"]).MODEL_LOADS))
    model = str((remote / "tiles" / "default").resolve())
    per_worker = [counts.get(model, 0) for counts in loads.values()]
    assert sum(per_worker) >= 1 and max(per_worker) == 1


def test_models_dir_a_worker_cannot_write_is_named(cluster, demo_root, tmp_path):
    from somad.cli import _fit_checks
    from somad.executor import ExecutorError

    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder is needed")
    target = blocker / "models" / "tiles" / "default"
    with pytest.raises(ExecutorError) as err:
        cluster.check_on_workers("--data-dir / --models-dir", _fit_checks, str(demo_root), ["tiles"], [str(target)],
                                 False)
    msg = str(err.value)
    assert "worker tcp://127.0.0.1:" in msg and str(blocker) in msg and "storage every worker sees" in msg


def _die_first_time(marker: str, progress=None) -> str:
    """Kills its worker process the first time (no marker file yet), answers the second time."""
    if not os.path.exists(marker):
        Path(marker).write_text("died once")
        os._exit(1)
    return "second attempt"


def _always_die(progress=None) -> None:
    os._exit(1)


def test_a_dying_worker_is_retried_once_then_reported(cluster, tmp_path):
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test file
    try:
        once = list(cluster.run_tasks(_die_first_time, {"once": {"marker": str(tmp_path / "marker")}}))
        always = list(cluster.run_tasks(_always_die, {"always": {}}))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    (r,) = once
    assert r.ok and r.value == "second attempt" and r.attempts == 2 and r.status == "done after retry"
    (r,) = always
    assert not r.ok and r.status == "failed" and "died" in r.error


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_is_one_line_naming_it(demo_root, tmp_path, capsys, monkeypatch):
    distributed = pytest.importorskip("distributed")

    def no_client(*args, **kwargs):  # Client retries a refused connection for its whole timeout
        raise AssertionError("a refused connection must fail before Dask's Client waits out its timeout")

    monkeypatch.setattr(distributed, "Client", no_client)
    address = f"tcp://127.0.0.1:{_free_port()}"
    assert main(["fit", "--data-dir", str(demo_root), "--category", "tiles", "--models-dir", str(tmp_path / "m"),
                 "--scheduler", address]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot reach the Dask scheduler at " + address)
    assert "connection refused" in err[0] and "dask scheduler" in err[0]
    assert not (tmp_path / "m").exists()
    monkeypatch.setenv("SOMAD_SCHEDULER", address)  # the environment variable is the same option
    assert main(["fit", "--data-dir", str(demo_root), "--category", "tiles", "--models-dir", str(tmp_path / "m")]) == 2
    assert address in capsys.readouterr().err and not (tmp_path / "m").exists()


def test_probe_scheduler_passes_a_listening_address_and_names_a_refused_one():
    pytest.importorskip("distributed")
    import socket

    from somad.executor import ExecutorError, probe_scheduler

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        assert probe_scheduler(f"tcp://127.0.0.1:{port}", timeout=5) is None
        assert probe_scheduler(f"127.0.0.1:{port}", timeout=5) is None  # no scheme: tcp, as Dask reads it
    with pytest.raises(ExecutorError, match=rf"at tcp://127.0.0.1:{port} \(connection refused: nothing listens on port {port}"):
        probe_scheduler(f"tcp://127.0.0.1:{port}", timeout=5)
    assert probe_scheduler("inproc://somewhere", timeout=5) is None  # other schemes: left to Dask


def test_without_dask_the_cluster_options_name_the_package(demo_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import fails as if not installed
    for argv in (["fit", "--workers", "2"], ["evaluate", "--scheduler", "tcp://127.0.0.1:1"],
                 ["predict", "--model-dir", str(tmp_path), "--workers", "1", str(demo_root)]):
        assert main([*argv, *(["--data-dir", str(demo_root)] if argv[0] != "predict" else [])]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "'distributed'" in err[0] and "requirements-dask.txt" in err[0]


def test_category_lists_and_conflicting_options(demo_root, capsys):
    from somad.cli import _categories, build_parser

    parse = build_parser().parse_args
    args = parse(["fit", "--data-dir", str(demo_root), "--category", "washers,tiles", "--category", "tiles"])
    assert _categories(args) == ["washers", "tiles"]
    assert _categories(parse(["fit", "--data-dir", str(demo_root), "--category", "tiles", "--category", "all"])) \
        == ["tiles", "washers"]
    assert main(["fit", "--data-dir", str(demo_root), "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert "give one of them" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["fit", "--workers", "0"])
    assert "--workers must be >= 1" in capsys.readouterr().err
