"""The SOM's training replayed: a small snapshot of the map after every epoch.

Asked for at fit time (``SOMAD.fit(..., replay=True)``, ``python -m somad fit --replay``, the
dashboard's fit form), a :class:`ReplayRecorder` runs after each SOM epoch and keeps the U-matrix
(:func:`somad.som.u_matrix`, from the weights: cheap), the exact quantization and topographic errors
(:func:`somad.som.exact_quality`, the same definitions as the fitted model's) on a fixed subsample of at
most :data:`REPLAY_SAMPLE` evenly spaced training vectors (the same each epoch; all of them for small
fits), and the epoch's neighbourhood radius and learning rate. The recorder only reads the weights: it
draws no random numbers and changes neither the batches nor the epoch loop, so a fit with a replay
gives the same model, bit for bit, as the same fit without one (``tests/test_replay.py``). The
snapshots are stored in an optional file ``replay.safetensors`` of the model directory
(:data:`REPLAY_FILE`): a model without it loads as before, and a somad that does not know the file
ignores it, so the model format version is unchanged.

Size: ``epochs * rows * cols * 4`` bytes of U-matrices plus 32 bytes an epoch (10 epochs of a 56x56
map: 125 KB; of a 100x100 map: 400 KB). Cost per epoch: one exact search of the two nearest neurons
for at most :data:`REPLAY_SAMPLE` vectors, whatever the size of the training set.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .som import exact_quality, neighbour_pairs, u_matrix

REPLAY_SAMPLE = 4096
"""At most this many training vectors (evenly spaced, the same every epoch) give each epoch's quantization
and topographic errors. The exact search over all of them would cost as much as the final search of a fit
in every epoch. Demo tiles at the defaults (125,440 vectors, 56x56 map, 1 torch thread, load average 7.5):
the SOM stage took 9.9 s without a replay, 11.0 s with 4,096 (the recorder 1.7 s in all) and 30.2 s with
65,536. On 4,096 the standard error of the quantization error is about 0.3 % of it (0.047 of 16.39; the
last epoch read 16.35) and that of the topographic error about 0.008 (0.360 against 0.362 over all), and
the curves are paired (the same vectors every epoch), so their shape is sharper than that. Fits with fewer
vectors use all of them."""
REPLAY_FILE = "replay.safetensors"
"""Optional file of a model directory with the snapshots."""
REPLAY_HELP = ("keep a snapshot of the SOM after every epoch (U-matrix, quantization and topographic error on "
               f"{REPLAY_SAMPLE:,} training patches; about epochs x rows x cols x 4 bytes) for the SOM explorer's "
               "training replay; the model is the same as without it")
"""What the fit option does, in words: the CLI's ``--replay`` help and the dashboard's checkbox help."""
HOW_TO_GET = ("This model was fitted without a training replay. To watch the map organise itself, fit it again "
              "on the Model page with 'Keep a training replay' ticked (the fit form).")
"""What the dashboard says for a model without snapshots (browser words; the CLI's flag is ``fit --replay``)."""
TE_NOTE = ("The topographic error often rises in the later epochs: as the neighbourhood radius shrinks, neighbouring "
           "neurons are pulled together less, so the map follows the patches more closely (the quantization error "
           "falls) but folds more in the feature space, and more patches find their two nearest neurons apart on the "
           "grid. This trade-off is expected (Kohonen, Self-Organizing Maps, 3rd ed. 2001; Kiviluoto 1996, who "
           "defined the topographic error; Pölzlbauer 2004), not a sign of a failed fit.")
"""Why the topographic error may rise over the epochs, in words (the replay's caption in the dashboard and report)."""


def caption(replay: "Replay", n_patches: int) -> str:
    """What the replay's error curves are measured on, and why the topographic error may rise (:data:`TE_NOTE`),
    in words: the caption of the replay in the dashboard and the report.

    Args:
        n_patches: training patches the SOM was trained on (``som_train_images_ * h * w``).
    """
    if replay.sample and replay.sample < n_patches:
        on = (f"The errors of each epoch are measured on {replay.sample:,} of the {n_patches:,} training patches "
              "(evenly spaced, the same every epoch), so the curves are an estimate; the model's own quantization "
              "and topographic errors are over all of them.")
    else:
        on = f"The errors of each epoch are measured on all {n_patches:,} training patches."
    return f"{on} {TE_NOTE}"


@dataclass(frozen=True)
class Replay:
    """Per-epoch snapshots of a SOM's training.

    Attributes:
        umatrix: float32 ``(E, rows, cols)`` U-matrix after each epoch's update.
        quantization_error: float64 ``(E,)`` mean BMU distance of the training vectors (feature units).
        topographic_error: float64 ``(E,)`` fraction of the training vectors whose two nearest neurons
            are not grid neighbours.
        sample: number of training vectors these errors are measured on (all, or :data:`REPLAY_SAMPLE`
            evenly spaced ones).
        sigma: float64 ``(E,)`` neighbourhood radius of the epoch (grid cells).
        learning_rate: float64 ``(E,)`` blend of the epoch's batch update.
    """

    umatrix: np.ndarray
    quantization_error: np.ndarray
    topographic_error: np.ndarray
    sigma: np.ndarray
    learning_rate: np.ndarray
    sample: int = 0

    @property
    def epochs(self) -> int:
        return len(self.umatrix)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """The snapshots as named CPU tensors for safetensors."""
        out = {name: torch.as_tensor(np.ascontiguousarray(getattr(self, name)))
               for name in ("umatrix", "quantization_error", "topographic_error", "sigma", "learning_rate")}
        out["sample"] = torch.tensor([int(self.sample)], dtype=torch.int64)
        return out

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor], grid: tuple[int, int]) -> "Replay":
        """Read :meth:`to_tensors` back, checked against the model's grid.

        Raises:
            ValueError: a tensor is missing or its shape disagrees (named in the message).
        """
        names = ("umatrix", "quantization_error", "topographic_error", "sigma", "learning_rate")
        missing = [n for n in names if n not in t]
        if missing:
            raise ValueError(f"it lacks {missing}")
        u = t["umatrix"].float().numpy()
        if u.ndim != 3 or tuple(u.shape[1:]) != tuple(grid):
            raise ValueError(f"its U-matrices have shape {tuple(u.shape)} but the SOM grid is {grid[0]}x{grid[1]}")
        rest = {n: t[n].double().numpy() for n in names[1:]}
        bad = [n for n, v in rest.items() if v.shape != (len(u),)]
        if bad:
            raise ValueError(f"{bad} do not have one value per epoch ({len(u)})")
        sample = int(t["sample"][0]) if "sample" in t and t["sample"].numel() == 1 else 0
        return cls(u, **rest, sample=sample)

    @property
    def nbytes(self) -> int:
        """Bytes the snapshots take (the file adds a small header)."""
        return int(sum(v.nbytes for v in self.to_tensors().values()))


class ReplayRecorder:
    """``on_epoch`` hook of :meth:`somad.som.SOM.fit` that records a :class:`Replay`.

    Args:
        source: the training vectors as a chunked patch source (:mod:`somad.patches`) or a float32
            ``(N, d)`` tensor, the same the SOM trains on.
        shape, topology: the SOM grid. schedule: ``SOM.schedule()``, ``(sigma_t, lr_t)`` per epoch.
        sample: at most this many vectors (evenly spaced) measure each epoch's errors; None =
            :data:`REPLAY_SAMPLE` (read when the recorder is made).
    """

    def __init__(self, source, shape: tuple[int, int], topology: str, schedule: list[tuple[float, float]],
                 sample: int | None = None):
        from .patches import PatchMemory

        sample = REPLAY_SAMPLE if sample is None else int(sample)
        source = source if hasattr(source, "chunks") else PatchMemory(torch.as_tensor(source))
        if source.n_rows > sample:
            rows = np.linspace(0, source.n_rows - 1, sample).round().astype(np.int64)
            source = PatchMemory(source.take(rows))
        self.source = source
        self.shape, self.topology, self.schedule = tuple(shape), topology, schedule
        self.pairs = neighbour_pairs(self.shape, topology)  # once, not per epoch
        self.u, self.qe, self.te = [], [], []

    def __call__(self, epoch: int, weights: torch.Tensor) -> None:
        """Record the snapshot after ``epoch``; reads ``weights`` float32 ``(M, d)`` and never writes them."""
        self.u.append(u_matrix(weights, self.shape, self.topology, self.pairs))
        _, _, qe, te = exact_quality(self.source, weights, self.shape, self.topology)
        self.qe.append(qe)
        self.te.append(te)

    def result(self) -> Replay:
        n = len(self.u)
        sched = np.asarray(self.schedule[:n], dtype=np.float64).reshape(n, 2)
        u = np.stack(self.u).astype(np.float32) if n else np.zeros((0, *self.shape), np.float32)
        return Replay(u, np.asarray(self.qe, np.float64), np.asarray(self.te, np.float64), sched[:, 0].copy(),
                      sched[:, 1].copy(), int(self.source.n_rows))
