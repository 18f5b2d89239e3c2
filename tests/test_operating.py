"""Operating point: thresholds from a target false-alarm rate or recall, the trade-off curve, the
validation folder and leaks (somad/operating.py), checked against brute-force oracles."""
from __future__ import annotations

import math

import numpy as np
import pytest

from somad import operating
from somad.errors import DataError, ParameterError


def _alarms(scores, thr) -> int:
    return int((np.asarray(scores) >= thr).sum())


def _random_scores(rng, n, ties=True):
    s = rng.normal(20, 4, n).round(1 if ties else 6)  # rounding makes ties
    return s


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("target", [0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0])
def test_far_threshold_is_lowest_with_at_most_target_alarms(seed, target):
    rng = np.random.default_rng(seed)
    s = _random_scores(rng, int(rng.integers(3, 60)))
    op = operating.threshold_at_false_alarm_rate(s, target)
    allowed = math.floor(target * len(s) + 1e-9)
    assert op.false_alarms == _alarms(s, op.threshold) <= allowed
    # oracle: every threshold candidate (each score, and above the max) with at most `allowed`
    # alarms flags no more than the chosen one; the chosen one flags the most such a threshold can
    best = max(_alarms(s, c) for c in np.r_[np.unique(s), s.max() + 1] if _alarms(s, c) <= allowed)
    assert op.false_alarms == best
    # mid-gap: the threshold lies strictly between the highest score it lets pass and the lowest it flags
    passed, flagged = s[s < op.threshold], s[s >= op.threshold]
    if len(passed) and len(flagged):
        assert op.threshold == pytest.approx((passed.max() + flagged.min()) / 2)
    assert op.n_normal == len(s) and f"{len(s)} cross-fitted training scores" in op.rule


def test_far_threshold_known_values():
    s = np.arange(1, 101, dtype=np.float32)  # 1..100
    op = operating.threshold_at_false_alarm_rate(s, 0.05)
    assert op.threshold == 95.5 and op.false_alarms == 5 and op.false_alarm_rate == 0.05
    assert "at most 5 %" in op.rule and "(5 of 100 at or above it)" in op.rule
    none = operating.threshold_at_false_alarm_rate(s[:20], 0.01)  # 1 % of 20 images: none may alarm
    assert none.threshold == 20.5 and none.false_alarms == 0 and "none may alarm" in none.rule
    assert operating.threshold_at_false_alarm_rate(s, 1.0).threshold == 1.0  # everything flagged
    same = operating.threshold_at_false_alarm_rate(np.full(5, 7.0), 0.0)
    assert same.threshold > 7.0 and same.false_alarms == 0


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("target", [0.0, 0.5, 0.8, 0.95, 1.0])
def test_recall_threshold_is_highest_reaching_target(seed, target):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 50))
    y = rng.integers(0, 2, n)
    y[0] = 1
    s = _random_scores(rng, n) + 3 * y
    op = operating.threshold_at_recall(y, s, target)
    need = math.ceil(target * y.sum() - 1e-9)
    found = int(((s >= op.threshold) & (y == 1)).sum())
    assert op.found == found >= need
    # oracle: no candidate threshold above the chosen one reaches the target
    if need == 0:
        assert op.threshold > s.max() and op.found == 0
    else:
        # the highest score that still reaches the target flags exactly what the chosen threshold flags
        best = max(c for c in np.unique(s) if int(((s >= c) & (y == 1)).sum()) >= need)
        assert ((s >= best) == (s >= op.threshold)).all() and op.threshold <= best
    assert op.false_alarms == int(((s >= op.threshold) & (y == 0)).sum())
    assert op.n_defective == int(y.sum()) and op.n_normal == int((y == 0).sum())


def test_recall_threshold_known_values_and_errors():
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    s = np.array([1.0, 2.0, 6.0, 3.0, 5.0, 7.0, 9.0])
    op = operating.threshold_at_recall(y, s, 0.75, source="val")  # 3 of 4: the 3rd best defect scores 5
    assert op.threshold == 4.0 and op.found == 3 and op.false_alarms == 1  # mid-gap between 5 and 3
    assert op.rule == "recall at least 75 % on val (3 of 4 defective images found, 1 of 3 good images flagged)"
    with pytest.raises(DataError, match="no defective image"):
        operating.threshold_at_recall(np.zeros(3), s[:3], 0.9, source="val")
    with pytest.raises(ParameterError, match="between 0 and 1"):
        operating.threshold_at_recall(y, s, 95)
    with pytest.raises(ParameterError, match="between 0 and 1"):
        operating.threshold_at_false_alarm_rate(s, -0.1)
    with pytest.raises(DataError, match="NaN"):
        operating.threshold_at_false_alarm_rate([1.0, np.nan], 0.1)


@pytest.mark.parametrize("seed", range(4))
def test_tradeoff_curve_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 40
    y = rng.integers(0, 2, n)
    s = _random_scores(rng, n) + 2 * y
    tr = operating.tradeoff_curve(y, s)
    assert tr.thresholds[0] > s.max() and tr.false_alarm_rate[0] == 0 and tr.recall[0] == 0
    assert tr.false_alarm_rate[-1] == 1 and tr.recall[-1] == 1
    assert len(tr.thresholds) == len(np.unique(s)) + 1 and np.all(np.diff(tr.thresholds) < 0)
    for t, far, rec in zip(tr.thresholds, tr.false_alarm_rate, tr.recall):
        assert (far, rec) == operating.point_at(y, s, t)
        assert far == ((s >= t) & (y == 0)).sum() / (y == 0).sum()
        assert rec == ((s >= t) & (y == 1)).sum() / (y == 1).sum()
    assert (tr.n_normal, tr.n_defective) == (int((y == 0).sum()), int(y.sum()))


def test_tradeoff_curve_one_class_has_nan_recall():
    tr = operating.tradeoff_curve(np.zeros(4), [1.0, 2.0, 2.0, 3.0])
    assert np.isnan(tr.recall).all() and list(tr.false_alarm_rate) == [0, 0.25, 0.75, 1.0]


def test_hand_rule():
    assert operating.hand_rule(31.23, "F1-optimal on 83 test images") == \
        "set by hand at 31.23 from the F1-optimal on 83 test images"
    assert operating.hand_rule(7.0, None) == "set by hand at 7"


def _write(path, value=0):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)
    return path


def test_validation_samples_layouts_and_errors(tmp_path):
    split = tmp_path / "val"
    _write(split / "good" / "a.png")
    _write(split / "good" / "b.png", 1)
    _write(split / "crack" / "c.png", 2)
    _write(split / ".hidden" / "d.png", 3)
    got = operating.validation_samples(split)
    assert [(s.path.name, s.defect, s.label) for s in got] == [("a.png", "good", 0), ("b.png", "good", 0),
                                                              ("c.png", "crack", 1)]
    cat = tmp_path / "cat"
    _write(cat / "test" / "good" / "a.png")
    _write(cat / "test" / "hole" / "h.png", 5)
    assert [s.defect for s in operating.validation_samples(cat)] == ["good", "hole"]
    with pytest.raises(DataError, match="is the test split itself"):
        operating.validation_samples(cat, test_split=cat / "test")
    with pytest.raises(DataError, match="does not exist"):
        operating.validation_samples(tmp_path / "nope")
    _write(tmp_path / "onlygood" / "good" / "x.png")
    with pytest.raises(DataError, match="no defect folder"):
        operating.validation_samples(tmp_path / "onlygood")
    _write(tmp_path / "nogood" / "crack" / "x.png")
    with pytest.raises(DataError, match="no good/ folder"):
        operating.validation_samples(tmp_path / "nogood")


def test_validation_folder_sharing_files_with_test_split_is_refused(tmp_path):
    test = tmp_path / "cat" / "test"
    img = _write(test / "good" / "a.png")
    _write(test / "crack" / "c.png", 9)
    val = tmp_path / "val"
    (val / "good").mkdir(parents=True)
    (val / "good" / "a.png").symlink_to(img)
    _write(val / "crack" / "z.png", 4)
    with pytest.raises(DataError, match="shares 1 image file"):
        operating.validation_samples(val, test_split=test)


def test_leaked_by_path_and_by_content(tmp_path):
    a = _write(tmp_path / "test" / "good" / "a.png", 1)
    b = _write(tmp_path / "test" / "good" / "b.png", 2)
    c = _write(tmp_path / "test" / "good" / "c.png", 3)
    copy = _write(tmp_path / "uploads" / "copy_of_c.png", 3)  # same bytes as c
    mask = operating.leaked([a, b, c], train_paths=[str(a)], taught_hashes=[operating.sha256_file(copy)])
    assert mask.tolist() == [True, False, True]
    assert operating.leaked([a, b], train_paths=[]).tolist() == [False, False]
