"""Teaching a model (SOMAD.partial_fit) and its versions (somad.versions): exactness against a fit with
the same SOM on the enlarged training set, provenance, concurrency, read-only folders, old formats."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from somad import data, explain, versions
from somad.model import SOMAD
from somad.patches import PatchMemory
from somad.som import exact_bmu

from conftest import TINY


def _new_normal(images: np.ndarray) -> np.ndarray:
    """The same parts under dimmer, warmer light: a pixel-wise colour gain."""
    return np.clip(images.astype(np.float32) * np.array([0.8, 0.7, 0.55]), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def split(demo_root):
    samples = data.train_samples(demo_root, "tiles")
    images, _ = data.load_split(samples, TINY["image_size"])
    paths = [str(s.path) for s in samples]
    return images[:8], paths[:8], _new_normal(images[8:11]), [f"new/{i}.png" for i in range(3)]


@pytest.fixture(scope="module")
def parent(split):
    images, paths, _, _ = split
    return SOMAD(**TINY).fit(images, paths)


def fixed_som_refit(parent: SOMAD, images: np.ndarray, paths: list[str], indices: np.ndarray) -> SOMAD:
    """What ``fit`` does on ``images`` with the SOM held at ``parent``'s weights: features, exact BMUs
    (fit's final search), Gaussians from statistics accumulated over all patches, and the cross-fitted
    threshold over training images ``indices`` (the parent's plus the added ones), searched afresh."""
    ref = SOMAD(**parent.get_params())
    for name in ("feature_shape_", "grid_", "channel_idx_", "stage_offsets_", "intensity_", "som_train_images_"):
        setattr(ref, name, copy.deepcopy(getattr(parent, name)))
    ref._extractor, ref._extractor_key = parent._extractor, parent._extractor_key
    ref.som_weights_ = parent.som_weights_
    ref.n_train_, ref.train_paths_ = len(images), list(paths)
    feats = ref.extractor.extract(images, 4, ref.torch_device)
    store = PatchMemory(feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1]))
    near, dist = exact_bmu(store.tensor(), ref.som_weights_, k=2)
    ref.train_bmu_, ref.train_bmu_dist_ = near[:, 0], dist[:, 0]
    stats = ref._fit_gaussians(store, None)
    ref.threshold_indices_ = np.asarray(indices)
    scores, maps, _ = ref._cross_fitted_scores(store.take(ref._image_rows(ref.threshold_indices_)), None, stats,
                                               None)
    ref._set_threshold(scores, maps)
    return ref


def _rel(a, b) -> float:
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return float((a - b).abs().max() / b.abs().max())


def test_partial_fit_equals_fixed_som_refit(parent, split):
    images, paths, new, new_paths = split
    taught = copy.deepcopy(parent).partial_fit(new, new_paths)
    indices = np.concatenate([parent.threshold_indices_, [8, 9, 10]])
    ref = fixed_som_refit(parent, np.concatenate([images, new]), paths + new_paths, indices)
    assert taught.n_train_ == 11 and taught.som_train_images_ == 8
    assert taught.train_paths_[-3:] == new_paths
    assert _rel(taught.means_, ref.means_) < 1e-4
    assert _rel(taught.covariances_, ref.covariances_) < 1e-4
    assert torch.equal(taught.counts_, ref.counts_)
    assert torch.equal(taught.train_bmu_, ref.train_bmu_)
    assert abs(taught.threshold_ - ref.threshold_) <= 1e-4 * abs(ref.threshold_)
    np.testing.assert_allclose(taught.train_scores_, ref.train_scores_, rtol=1e-4)
    np.testing.assert_allclose(taught.pixel_range_, ref.pixel_range_, rtol=1e-4)
    # the new normal moved the model: a test that cannot fail would not see this
    assert _rel(taught.covariances_, parent.covariances_) > 1e-3
    assert taught.threshold_ != parent.threshold_
    assert len(taught.train_scores_) == len(parent.train_scores_) + 3
    assert taught.quantization_error_ == pytest.approx(float(ref.train_bmu_dist_.mean()), rel=1e-5)


def test_partial_fit_twice_equals_once(parent, split):
    _, _, new, new_paths = split
    once = copy.deepcopy(parent).partial_fit(new, new_paths)
    twice = copy.deepcopy(parent).partial_fit(new[:1], new_paths[:1]).partial_fit(new[1:], new_paths[1:])
    assert _rel(twice.covariances_, once.covariances_) < 1e-4
    assert twice.threshold_ == pytest.approx(once.threshold_, rel=1e-4)


def test_partial_fit_refuses_other_arrays(parent):
    from somad.errors import ParameterError

    with pytest.raises(ParameterError, match="uint8"):
        copy.deepcopy(parent).partial_fit(np.zeros((1, 32, 32, 3), np.uint8))
    with pytest.raises(ParameterError, match=r"got 2 images but 1 path\."):
        copy.deepcopy(parent).partial_fit(np.zeros((2, 64, 64, 3), np.uint8), ["a.png"])


# ------------------------------------------------------------------ versions on disk
@pytest.fixture()
def saved(parent, tmp_path):
    from somad.persistence import save_model

    return save_model(parent, tmp_path / "models" / "tiles" / "default")


@pytest.fixture(scope="module")
def new_files(split, tmp_path_factory):
    """The three new-normal images as PNG files of another size and aspect than the training images."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("new_normal")
    out = []
    for i, img in enumerate(split[2]):
        p = folder / f"light_{i}.png"
        Image.fromarray(img).resize((96, 80)).save(p)
        out.append(p)
    return out


def _tree(path) -> dict:
    return {str(p.relative_to(path)): (p.stat().st_mtime_ns, p.stat().st_size) for p in path.rglob("*")}


def test_teach_saves_a_new_version_with_provenance(saved, new_files):
    from somad.persistence import load_model
    from somad.store import default_model
    from somad.versions import provenance, teach, versions

    before = _tree(saved)
    out = teach(saved, new_files, note="new lamp in line 3")
    assert out.name == "default-v2" and out.parent == saved.parent
    assert _tree(saved) == before  # the parent is never touched
    prov = provenance(out)
    assert prov["kind"] == "teach" and prov["note"] == "new lamp in line 3"
    assert prov["parent"]["name"] == "default" and len(prov["parent"]["config_sha256"]) == 64
    assert [a["path"] for a in prov["added"]] == [str(p) for p in new_files]
    import hashlib
    assert prov["added"][0]["sha256"] == hashlib.sha256(new_files[0].read_bytes()).hexdigest()
    assert prov["time"].endswith("Z") and prov["n_train_before"] == 8 and prov["n_train_after"] == 11
    child, par = load_model(out), load_model(saved)
    assert child.threshold_ == pytest.approx(prov["threshold_after"]) and par.threshold_ == prov["threshold_before"]
    assert child.n_train_ == 11 and child.train_paths_[-3:] == [str(p) for p in new_files]
    assert provenance(saved) is None
    # a second teach of the child names the next version and records its parent
    out2 = teach(out, new_files[:1])
    assert out2.name == "default-v3" and provenance(out2)["parent"]["name"] == "default-v2"
    listed = {v.name: v for v in versions(saved.parent.parent, "tiles")}
    assert set(listed) == {"default", "default-v2", "default-v3"}
    assert listed["default-v2"].kind == "teach" and listed["default-v2"].n_added == 3
    assert listed["default"].kind == "fit" and listed["default"].parent is None
    assert default_model(saved.parent.parent, "tiles") == saved  # a version is never the default by itself


def test_save_threshold_is_a_version_that_teaching_keeps(saved, new_files):
    from somad.persistence import load_model
    from somad.versions import provenance, save_threshold, teach

    out = save_threshold(saved, 12.5, rule="set by hand at 12.5 from the F1-optimal on 12 test images",
                         name="hand")
    model = load_model(out)
    assert model.threshold_ == 12.5 and model.threshold_rule.startswith("set by hand at 12.5")
    prov = provenance(out)
    assert prov["kind"] == "threshold" and prov["threshold_after"] == 12.5 and prov["added"] == []
    taught = load_model(teach(out, new_files[:1]))
    assert taught.threshold_ == 12.5  # a threshold set by hand stays through teaching
    from somad.errors import ModelFileError, ParameterError
    with pytest.raises(ModelFileError, match="already exists"):
        save_threshold(saved, 3.0, rule="x", name="hand")
    with pytest.raises(ParameterError, match="finite"):
        save_threshold(saved, float("nan"), rule="x")
    with pytest.raises(ParameterError, match=">= 0"):  # scores are distances: a negative threshold flags everything
        save_threshold(saved, -1.0, rule="x")


def test_cli_teach_and_threshold(saved, new_files, capsys):
    from somad.cli import main
    from somad.persistence import load_model

    assert main(["teach", "--model-dir", str(saved), "--note", "lamp", str(new_files[0].parent)]) == 0
    out = capsys.readouterr().out
    assert "saved new version" in out and "default-v2" in out
    assert "training images: 8 -> 11" in out and "threshold:" in out
    assert main(["threshold", "--model-dir", str(saved), "--set", "7.25", "--name", "seven"]) == 0
    out = capsys.readouterr().out
    assert "threshold: " in out and "-> 7.250" in out
    assert load_model(saved.parent / "seven").threshold_ == 7.25
    assert main(["teach", "--model-dir", str(saved), str(saved / "nothing.png")]) == 2


def test_concurrent_teaches_get_two_whole_versions(saved, new_files, monkeypatch):
    import os
    import threading

    from somad import versions as v
    from somad.persistence import load_model

    real_rename = os.rename
    raced = []

    def rename(src, dst):  # another process takes the first free name just before this rename
        if not raced:
            raced.append(dst)
            os.makedirs(dst)
            (v.Path(dst) / "config.json").write_text("{}")
        return real_rename(src, dst)

    monkeypatch.setattr(v.os, "rename", rename)
    out = v.teach(saved, new_files[:1])
    assert str(raced[0]).endswith("default-v2") and out.name == "default-v3"
    monkeypatch.setattr(v.os, "rename", real_rename)
    results = []
    threads = [threading.Thread(target=lambda p=p: results.append(v.teach(saved, [p]))) for p in new_files[1:]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.name for r in results) == ["default-v4", "default-v5"]
    for r in results:
        m = load_model(r)
        assert m.train_paths_[-1] == v.provenance(r)["added"][0]["path"]  # its own image, not the other's


def test_read_only_models_folder_is_one_clear_error(saved, new_files, monkeypatch):
    from somad import versions as v
    from somad.errors import OutputError

    before = _tree(saved.parent)
    monkeypatch.setattr(v.os, "access", lambda *a, **k: False)
    with pytest.raises(OutputError, match="not writable.*unchanged"):
        v.teach(saved, new_files)
    monkeypatch.undo()

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(v.tempfile, "mkdtemp", denied)  # the check passed but the write fails
    with pytest.raises(OutputError, match="Permission denied"):
        v.teach(saved, new_files)
    assert _tree(saved.parent) == before


def test_model_before_format_5_loads_and_says_to_refit(saved, new_files):
    from safetensors.torch import load_file, save_file

    from somad.errors import ModelFileError
    from somad.persistence import load_model
    from somad.versions import save_threshold, teach

    cfg = json.loads((saved / "config.json").read_text())
    cfg["format_version"] = 4
    for key in ("som_train_images", "threshold_manual"):
        cfg.pop(key)
    (saved / "config.json").write_text(json.dumps(cfg))
    t = load_file(str(saved / "tensors.safetensors"))
    save_file({k: v for k, v in t.items() if not k.startswith("cv_")}, str(saved / "tensors.safetensors"))
    model = load_model(saved)
    assert model.som_train_images_ == 8 and len(model.cv_features_) == 0
    with pytest.raises(ModelFileError, match="before teaching existed.*fit it again") as exc:
        teach(saved, new_files)
    assert "\n" not in str(exc.value)
    out = save_threshold(saved, 9.0, rule="by hand")  # an old model still takes a saved threshold
    assert load_model(out).threshold_ == 9.0


def test_defective_labelled_image_needs_confirmation(saved, demo_root):
    from somad import data
    from somad.errors import ParameterError
    from somad.versions import provenance, teach

    bad = next(s.path for s in data.test_samples(demo_root, "tiles") if s.label)
    with pytest.raises(ParameterError, match="labelled defective"):
        teach(saved, [bad])
    out = teach(saved, [bad], confirmed_defective=[bad])
    assert provenance(out)["added"][0]["confirmed_defective"] is True


def test_refit_version_trains_the_som_on_taught_images(saved, new_files):
    from somad.cli import main
    from somad.persistence import load_model
    from somad.versions import provenance, refit_advice

    from somad.versions import teach

    teach_dir = teach(saved, new_files)
    taught = load_model(teach_dir)
    assert taught.som_train_images_ == 8
    assert main(["refit", "--model-dir", str(teach_dir), "--note", "advice followed"]) == 0
    out = saved.parent / "default-v3"
    m, prov = load_model(out), provenance(out)
    assert prov["kind"] == "refit" and prov["parent"]["name"] == "default-v2"
    assert [a["path"] for a in prov["added"]] == [str(p) for p in new_files]
    assert m.n_train_ == m.som_train_images_ == 11 and refit_advice(m) is None
    assert not torch.equal(m.som_weights_, taught.som_weights_)  # the SOM itself was trained again


def test_refit_advice_tells_a_new_appearance_from_a_familiar_one(parent, split):
    from somad.versions import refit_advice

    images = split[0]
    familiar = copy.deepcopy(parent).partial_fit(images[:1])  # a training image again: nothing new
    assert refit_advice(familiar) is None
    noise = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    far = copy.deepcopy(parent).partial_fit(noise)
    assert "Refit the SOM" in refit_advice(far) and "farther from their best-matching neuron" in refit_advice(far)
    many = copy.deepcopy(parent).partial_fit(images[:4])
    assert "taught images are 50% of the 8" in refit_advice(many)


# ---------------------------------------------------------------- leaks (shared by the dashboard and evaluate)
def test_counts_with_and_without_leak():
    labels = np.array([0, 0, 1, 1])
    scores = np.array([5.0, 1.0, 6.0, 2.0])
    every, clean = explain.counts_with_and_without(labels, scores, 4.0, np.zeros(4, bool))
    assert every == {"TP": 1, "FP": 1, "FN": 1, "TN": 1} and clean is None
    every, clean = explain.counts_with_and_without(labels, scores, 4.0, np.array([True, False, False, False]))
    assert every == explain.outcome_counts(labels, scores, 4.0)
    assert clean == {"TP": 1, "FP": 0, "FN": 1, "TN": 1}


def _bare_model_dir(folder: Path, provenance: dict | None) -> Path:
    folder.mkdir(parents=True)
    cfg = {"format_version": 0}
    if provenance is not None:
        cfg["provenance"] = provenance
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def test_provenance_chain_and_leak_mask(tmp_path, monkeypatch):
    from somad import operating, persistence

    monkeypatch.setattr(persistence, "read_config", lambda d: json.loads((Path(d) / "config.json").read_text()))
    test = tmp_path / "cat" / "test" / "good"
    test.mkdir(parents=True)
    a, b, c = (test / n for n in ("a.png", "b.png", "c.png"))
    for i, p in enumerate((a, b, c)):
        p.write_bytes(bytes([i]) * 10)
    upload = tmp_path / "up.png"
    upload.write_bytes(bytes([2]) * 10)  # the content of c.png, under another name
    root = tmp_path / "models" / "cat"
    _bare_model_dir(root / "base", None)
    _bare_model_dir(root / "v1", {"parent": {"name": "base", "path": "/moved/base"}, "kind": "teach",
                             "added": [{"path": str(upload), "sha256": operating.sha256_file(upload)}]})
    v2 = _bare_model_dir(root / "v2", {"parent": str(root / "v1"), "kind": "threshold", "added": []})
    chain = versions.provenance_chain(v2)
    assert [p["kind"] for p in chain] == ["threshold", "teach"]
    assert [f["path"] for f in versions.taught_files(v2)] == [str(upload)]

    class M:
        train_paths_ = [str(a)]

    samples = [data.Sample(p, "good") for p in (a, b, c)]
    assert versions.leak_mask(M(), v2, samples).tolist() == [True, False, True]
    assert versions.leak_mask(M(), root / "base", samples).tolist() == [True, False, False]


def test_evaluate_reports_taught_test_images_with_and_without(dash_model_env, demo_root, tmp_path, capsys):
    """A test image taught as normal leaks into the test split: ``evaluate`` says so in one line and
    metrics.json holds its name and the metrics without it (the dashboard's rule, leak_mask)."""
    import csv
    import shutil

    from somad import metrics as M
    from somad.cli import main

    models = tmp_path / "models"
    parent = models / "tiles" / "small"
    shutil.copytree(dash_model_env[1], parent)
    taught = sorted((demo_root / "tiles" / "test" / "good").iterdir())[0]
    child = versions.teach(parent, [taught])

    def evaluate(name: str) -> tuple[dict, list[dict], list[str]]:
        out = tmp_path / "res" / name
        assert main(["evaluate", "--data-dir", str(demo_root), "--category", "tiles", "--models-dir", str(models),
                     "--name", name, "--results-dir", str(out), "--figures", "0"]) == 0
        lines = [ln for ln in capsys.readouterr().err.splitlines() if "taught" in ln]
        rows = list(csv.DictReader(open(out / "tiles" / "per_image.csv")))
        return json.loads((out / "tiles" / "metrics.json").read_text()), rows, lines

    m, rows, lines = evaluate("small")  # the parent learned no test image
    assert m["n_taught_test"] == 0 and m["taught_test"] == [] and m["without_taught"] is None and lines == []
    m, rows, lines = evaluate(child.name)
    assert m["n_taught_test"] == 1 and m["taught_test"] == [f"good/{taught.name}"]
    assert len(lines) == 1 and lines[0].startswith(f"warning: tiles: 1 test image (good/{taught.name}) was taught "
                                                   f"to model {child.name} as normal")
    clean = m["without_taught"]
    keep = [r for r in rows if Path(r["path"]).name != taught.name or Path(r["path"]).parent.name != "good"]
    labels = np.array([int(r["label"]) for r in keep])
    scores = np.array([float(r["score"]) for r in keep])
    assert clean["n_test"] == m["n_test"] - 1 == len(keep) and clean["n_anomalous"] == m["n_anomalous"]
    assert clean["image_auroc"] == pytest.approx(M.auroc(labels, scores), abs=1e-6)
    every = explain.outcome_counts(np.array([int(r["label"]) for r in rows]),
                                   np.array([float(r["score"]) for r in rows]), m["threshold"])
    assert clean["outcomes_with_taught"] == every
    assert clean["outcomes"] == explain.outcome_counts(labels, scores, m["threshold"])
    assert f"Without it ({clean['n_test']} test images): image AUROC {clean['image_auroc']:.3f}" in lines[0]
