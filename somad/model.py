"""The SOMAD detector as one scikit-learn style estimator.

``SOMAD(**hyperparameters).fit(train_images)`` runs the whole method of
Li et al., "Anomaly Detection via Self-organizing Map" (ICIP 2021,
arXiv 2107.09903): features (:mod:`somad.features`), SOM (:mod:`somad.som`),
per-neuron Gaussians (:mod:`somad.gaussian`) and scoring (:mod:`somad.scoring`).

Beyond the paper, ``fit`` also:

* initialises every neuron at the mean feature of its grid position over all
  training images (adaptive-average-pooled when the grid is smaller than the
  feature map) and trains on *all* training patch vectors;
* keeps the exact BMU (and its distance) of every training patch, so "which
  training patches does neuron (i, j) stand for" is a lookup;
* scores the training images with Gaussians fitted without them
  (``cv_folds``-fold cross-fitting, same SOM) to set a deployable image
  threshold (the ``threshold_percentile`` of those scores) and a per-category
  display range of pixel scores. Scores are never normalised per image.
"""
from __future__ import annotations

import inspect
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .data import EIGHT_BIT, ImageFiles, IntensityRule
from .decision import is_anomalous
from .devices import check_device
from .errors import NotFittedError, ParameterError
from .features import DEFAULT_BACKBONE, STRIDES, FeatureExtractor
from .gaussian import NeuronStats, accumulate, accumulate_chunks, gaussians, recover_stats, whitening_factors
from .patches import PatchFile, PatchMemory, check_resources
from .progress import Progress, Stage, counter, for_stage
from .replay import ReplayRecorder
from .scoring import (IMAGE_SCORES, SCORE_CHUNK, PatchScores, anomaly_maps, image_scores, mahalanobis_pairs,
                      score_patches)
from .som import SOM, SOM_BACKENDS, TOPOLOGIES, exact_bmu, hit_map, topographic_error, u_matrix
from .words import plural

PARAM_HELP = {
    "backbone": "feature extractor: a name from somad.features.BACKBONES or any timm model name",
    "weights": "local backbone checkpoint (.pth/.pt or .safetensors) for backbones without offline weights",
    "image_size": "side in pixels every image is resized to (whole frame, no crop); a multiple of 16, >= 32",
    "d": "feature channels kept (a random subset fixed by the seed); None keeps all",
    "grid": "SOM grid (rows, cols); None = the feature-map size (image_size / 4)",
    "topology": "SOM lattice: rectangular (8 neighbours) or hexagonal (6 neighbours)",
    "epochs": "SOM epochs over all training patch vectors",
    "sigma": "initial neighbourhood sigma in grid cells; None = max(grid) / 8",
    "sigma_final": "final neighbourhood sigma in grid cells",
    "learning_rate": "initial blend of the batch SOM update, in (0, 1]",
    "learning_rate_final": "final blend of the batch SOM update, in (0, 1]",
    "som_backend": "SOM trainer: torch (vectorised, CPU or CUDA) or minisom (the reference)",
    "search_radius": "local BMU search window in grid cells during training; None = exact search every epoch",
    "k": "nearest neurons (Euclidean) whose Mahalanobis distances give a patch score (paper: 4)",
    "blur_sigma": "Gaussian blur of the anomaly map, in pixels (paper: 4)",
    "image_score": "image score rule (somad.scoring.IMAGE_SCORES): top_mean = mean of the hottest 5 percent "
                   "of the map, max = maximum of the blurred map (paper)",
    "cov_eps": "ridge added to every neuron covariance (paper: 0.01)",
    "shrinkage": "pseudo-samples of pooled covariance mixed into each neuron's covariance",
    "threshold_percentile": "percentile of cross-fitted training image scores used as the deployable threshold",
    "cv_folds": "cross-fitting folds for the deployable threshold (0 or 1: in-sample)",
    "cv_max_images": "at most this many training images (evenly spaced) are scored for the threshold",
    "device": "torch device: cpu, cuda or cuda:<i> (checked to exist on this machine)",
    "seed": "seed of the channel subset and of any random initialisation",
    "batch_size": "images per feature-extraction and scoring batch",
}
"""Help text of every hyperparameter of :class:`SOMAD` (names and defaults come from its signature)."""

PARAM_TYPES = {"weights": str, "d": int, "grid": tuple, "sigma": float, "search_radius": int}
"""Value type of the hyperparameters whose default is None (the others take their default's type)."""

PARAM_CHOICES = {"image_score": tuple(IMAGE_SCORES), "topology": TOPOLOGIES, "som_backend": tuple(SOM_BACKENDS),
                 "device": ("cpu", "cuda")}
"""Allowed values of the categorical hyperparameters."""

RUNTIME_PARAMS = ("weights", "device", "batch_size")
"""Hyperparameters that steer where and how fast a model runs, not what it learns: not saved with a model."""


@dataclass(frozen=True)
class ParamSpec:
    """One hyperparameter of :class:`SOMAD`, as the CLI and the dashboard form show it."""

    name: str
    default: object
    type: type
    help: str
    choices: tuple | None = None


def param_specs() -> list[ParamSpec]:
    """Every hyperparameter of :class:`SOMAD`, in signature order (the one source of names,
    defaults, types, help and choices)."""
    out = []
    for p in inspect.signature(SOMAD.__init__).parameters.values():
        if p.kind is not inspect.Parameter.KEYWORD_ONLY:
            continue
        typ = PARAM_TYPES.get(p.name, type(p.default))
        out.append(ParamSpec(p.name, p.default, typ, PARAM_HELP[p.name], PARAM_CHOICES.get(p.name)))
    return out


@dataclass(frozen=True)
class TensorSpec:
    """A fitted array of :class:`SOMAD`.

    Attributes:
        dtype: torch dtype in memory. shape: symbolic shape: ``M`` neurons, ``d`` channels,
            ``P`` training patches, ``T`` threshold images, ``Q`` patches of the threshold images
            (``T * h * w``, or 0 in a model saved before format 5), ``k`` = min(k, M). on_device: a torch tensor on the
            model device (else a CPU numpy array). stored: dtype on disk when narrower.
    """

    dtype: torch.dtype
    shape: tuple[str, ...]
    on_device: bool = True
    stored: torch.dtype | None = None


FITTED_TENSORS = {
    "som_weights_": TensorSpec(torch.float32, ("M", "d")),
    "means_": TensorSpec(torch.float32, ("M", "d")),
    "covariances_": TensorSpec(torch.float32, ("M", "d", "d")),
    "counts_": TensorSpec(torch.int64, ("M",)),
    "train_bmu_": TensorSpec(torch.int64, ("P",), stored=torch.int32),
    "train_bmu_dist_": TensorSpec(torch.float32, ("P",)),
    "channel_idx_": TensorSpec(torch.int64, ("d",), on_device=False),
    "train_scores_": TensorSpec(torch.float32, ("T",), on_device=False),
    "threshold_indices_": TensorSpec(torch.int64, ("T",), on_device=False),
    "cv_features_": TensorSpec(torch.float32, ("Q", "d"), on_device=False),
    "cv_neighbours_": TensorSpec(torch.int64, ("Q", "k"), on_device=False, stored=torch.int32),
}
"""The fitted arrays: saving, loading, shape checks and device moves all read this table.

``cv_features_`` and ``cv_neighbours_`` are what makes :meth:`SOMAD.partial_fit` fast and exact: the
patch vectors of the ``T`` threshold images (rows in ``threshold_indices_`` order, then feature row,
then column) and their ``k`` nearest neurons, which a fixed SOM never changes. On disk they cost
``T * h * w * (4 d + 4 k)`` bytes: 1.30 MB per threshold image at the defaults (224 px, d = 100,
k = 4), 130 MB for the 100 threshold images of a default fit, about as much as ``covariances_``
(3,136 x 100 x 100 float32, 125 MB). The per-neuron statistics are not kept: they are recovered
exactly from ``means_``, ``covariances_`` and ``counts_`` (:func:`somad.gaussian.recover_stats`)."""


def check_params(params: dict) -> None:
    """Check hyperparameters ``{name: value}`` (any subset of :func:`param_specs`) as ``fit`` does,
    before any work: the one check that the CLI's ``fit``, :func:`somad.pipeline.fit_category` and
    the dashboard's fit form run.

    Raises:
        ParameterError: a value that cannot work (e.g. ``k`` above the number of neurons, a SOM
            grid of one neuron), named in the message with what to do.
    """
    SOMAD(**params)._validate_params()


def _finite(value) -> float:
    """``float(value)`` for a finite number (not a bool); ValueError otherwise."""
    if isinstance(value, bool) or not np.isfinite(x := float(value)):
        raise ValueError(f"{value!r} is not a finite number")
    return x


def _finite_pair(value) -> tuple[float, float]:
    """Two finite numbers as a tuple; ValueError otherwise."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"{value!r} is not a pair of numbers")
    return _finite(value[0]), _finite(value[1])


FITTED_VALUES = {"grid_": tuple, "feature_shape_": tuple, "n_train_": int, "train_paths_": list,
                 "threshold_": _finite, "pixel_range_": _finite_pair, "quantization_error_": float,
                 "topographic_error_": float, "timings_": dict, "cv_folds_used_": int,
                 "intensity_": IntensityRule.from_dict, "som_train_images_": int}
"""The fitted scalars and lists (saved in ``config.json`` under their names without the underscore), each
with the function that reads it back (raising TypeError or ValueError on a damaged value)."""

FEATURE_STRIDE = 4
"""Pixels per feature cell: the default grid (``grid=None``) is ``image_size / 4`` square."""

PIXEL_RANGE_PERCENTILES = (1.0, 99.99)
"""Display range of pixel scores: these percentiles of the cross-fitted training maps (robust to outliers)."""

PATCH_STORES = ("disk", "memory")
"""Where ``fit`` keeps the training patch vectors (see :mod:`somad.patches`)."""

PIXEL_RANGE_STRIDE = 4
"""Every 4th pixel in each direction of the training maps enters the display range: 1/16 of the memory."""


@dataclass
class AnomalyMaps:
    """What :meth:`SOMAD.anomaly_maps` returns.

    Attributes:
        scores: float32 ``(N,)`` image scores (Mahalanobis units).
        maps: float32 ``(N, S, S)`` pixel anomaly maps, same units.
        patches: the :class:`~somad.scoring.PatchScores` of every patch (flat over N, h, w in C
            order) when asked for, else None.
    """

    scores: np.ndarray
    maps: np.ndarray
    patches: PatchScores | None = None


class SOMAD:
    """Self-Organizing Map anomaly detector.

    Every argument is a keyword-only hyperparameter, described in :data:`PARAM_HELP`;
    they are stored as given and validated in :meth:`fit` (scikit-learn's convention).

    Fitted attributes (trailing underscore, set by :meth:`fit` or ``load_model``): the arrays of
    :data:`FITTED_TENSORS` and the values of :data:`FITTED_VALUES`:
        channel_idx_: int64 ``(d,)``. feature_shape_: (h, w) feature cells. grid_: (rows, cols).
        som_weights_: float32 ``(M, d)``, M = rows * cols. means_: float32 ``(M, d)``.
        covariances_: float32 ``(M, d, d)``. factors_: float32 ``(M, d, d)`` inverse Cholesky factors.
        counts_: int64 ``(M,)`` training patches won.
        train_bmu_: int64 ``(N_train * h * w,)`` BMU of each training patch, patch ``p`` being
            image ``p // (h*w)``, row ``(p // w) % h``, col ``p % w``. train_bmu_dist_: float32, same shape.
        train_paths_: list of str. train_scores_: float32 ``(T,)`` cross-fitted scores of the training
            images ``threshold_indices_`` int64 ``(T,)``, T = min(N_train, cv_max_images).
        threshold_: float image threshold. pixel_range_: (lo, hi) display range of pixel scores.
        quantization_error_, topographic_error_: SOM quality on the training vectors.
        n_train_: training images. timings_: seconds per fit stage.
        cv_folds_used_: folds of the threshold's cross-fitting actually used (1 = in-sample).
        cv_features_: float32 ``(T * h * w, d)`` patch vectors of the threshold images, cv_neighbours_:
            int64 ``(T * h * w, k)`` their k nearest neurons (see :data:`FITTED_TENSORS`; empty in models
            saved before format 5, which cannot be taught). som_train_images_: the first this many
            training images trained the SOM; the rest were added by :meth:`partial_fit`.
        replay_: the :class:`~somad.replay.Replay` (a snapshot of the SOM per epoch) when ``fit`` was
            asked for it, else None (saved in an optional file, :data:`somad.replay.REPLAY_FILE`).
        intensity_: the :class:`~somad.data.IntensityRule` of the training images (how samples
            with more than 8 bits map to 8 bits); test images and uploads are read with it.
        stage_offsets_: float64 ``(3, 2)`` response offset in pixels (row, col) of the backbone's
            stride-4, 8 and 16 stages, measured by the dot test at fit
            (:meth:`~somad.features.FeatureExtractor.calibrate`) and undone in every feature map, so
            a feature cell, and the anomaly map, sit on what causes them. Zeros for models saved
            before this correction (they load and score as they were fitted).
    """

    def __init__(self, *, backbone: str = DEFAULT_BACKBONE, weights: str | None = None, image_size: int = 224,
                 d: int | None = 100, grid: tuple[int, int] | None = None, topology: str = "rectangular",
                 epochs: int = 10, sigma: float | None = None, sigma_final: float = 0.5,
                 learning_rate: float = 1.0, learning_rate_final: float = 1.0, som_backend: str = "torch",
                 search_radius: int | None = 4, k: int = 4, blur_sigma: float = 4.0,
                 image_score: str = "top_mean", cov_eps: float = 0.01,
                 shrinkage: float = 10.0, threshold_percentile: float = 99.0, cv_folds: int = 5,
                 cv_max_images: int = 100, device: str = "cpu", seed: int = 0, batch_size: int = 32):
        for name, value in locals().items():
            if name != "self":
                setattr(self, name, value)

    # ------------------------------------------------------------- parameters
    def get_params(self, deep: bool = True) -> dict:
        """Every hyperparameter by name (scikit-learn's ``get_params``)."""
        return {p.name: getattr(self, p.name) for p in param_specs()}

    def set_params(self, **params) -> "SOMAD":
        """Set hyperparameters by name; returns self. Fitted state stays until the next ``fit``.

        Raises:
            ParameterError: an unknown name.
        """
        known = {p.name for p in param_specs()}
        for name, value in params.items():
            if name not in known:
                raise ParameterError(f"unknown hyperparameter '{name}': use one of {', '.join(sorted(known))}.")
            setattr(self, name, value)
        return self

    def params_summary(self) -> dict[str, str]:
        """Every hyperparameter as text for a model card, a None shown as what it stands for."""
        auto = {"grid": "feature-map size", "weights": "the backbone's registered weights",
                "sigma": "max(grid) / 8", "d": "all channels", "search_radius": "exact search"}
        if hasattr(self, "grid_"):
            auto["grid"] = f"{self.grid_[0]}x{self.grid_[1]} (feature-map size)"
        return {name: auto.get(name, "auto") if value is None else str(value)
                for name, value in self.get_params().items()}

    def _validate_params(self) -> None:
        """Check every hyperparameter before any work.

        Raises:
            ParameterError: a value that cannot work, named in the message.
        """
        bad = [n for n, v in self.get_params().items()
               if isinstance(v, float) and not np.isfinite(v)]
        if bad:
            raise ParameterError(f"{', '.join(bad)} must be a finite number, got "
                                 f"{', '.join(str(getattr(self, n)) for n in bad)}.")
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ParameterError(f"seed must be an integer >= 0, got {self.seed}.")
        if not isinstance(self.image_size, int) or self.image_size < 32 or self.image_size % 16:
            raise ParameterError(f"image_size must be a multiple of 16 and >= 32, got {self.image_size}.")
        if self.k < 1:
            raise ParameterError(f"k must be >= 1, got {self.k}.")
        if not 0 < self.threshold_percentile <= 100:
            raise ParameterError(f"threshold_percentile must be in (0, 100], got {self.threshold_percentile}.")
        for name in ("blur_sigma", "shrinkage"):
            if getattr(self, name) < 0:
                raise ParameterError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.cov_eps <= 0:
            raise ParameterError(f"cov_eps must be > 0, got {self.cov_eps}.")
        if self.d is not None and self.d < 1:
            raise ParameterError(f"d (channels kept) must be >= 1, got {self.d}.")
        if self.grid is not None and (len(self.grid) != 2 or min(self.grid) < 1):
            raise ParameterError(f"grid must be two positive ints (rows, cols), got {self.grid}.")
        if self.image_score not in IMAGE_SCORES:
            raise ParameterError(f"image_score must be one of {', '.join(IMAGE_SCORES)}, got {self.image_score!r}.")
        for name in ("batch_size", "cv_max_images"):
            if getattr(self, name) < 1:
                raise ParameterError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.cv_folds < 0:
            raise ParameterError(f"cv_folds must be >= 0 (0 or 1: in-sample threshold), got {self.cv_folds}.")
        if self.search_radius is not None and self.search_radius < 0:
            raise ParameterError(f"search_radius must be >= 0 or None (exact search), got {self.search_radius}.")
        rows, cols = self.grid or (self.image_size // FEATURE_STRIDE,) * 2
        if self.k > rows * cols:
            raise ParameterError(f"k={self.k} nearest neurons but the SOM grid {rows}x{cols} has only "
                                 f"{rows * cols} neurons: lower k or enlarge the grid.")
        check_device(self.device)
        try:  # the SOM checks its own hyperparameters (size, topology, backend, epochs, sigma, learning rates)
            self._som((rows, cols))
        except ValueError as exc:
            raise ParameterError(str(exc)) from None

    def _som(self, grid: tuple[int, int]) -> SOM:
        return SOM(grid, self.topology, self.sigma, self.sigma_final, self.learning_rate,
                   self.learning_rate_final, self.epochs, self.som_backend, self.device, self.search_radius,
                   self.seed)

    def _check_fitted(self) -> None:
        if not hasattr(self, "means_"):
            raise NotFittedError("this SOMAD model is not fitted: call fit() or load a saved model.")

    def _reset(self) -> None:
        """Forget everything learned and every cache (trailing- or leading-underscore attributes),
        except a feature extractor built for the current backbone settings (see :attr:`extractor`)."""
        keep = ("_extractor", "_extractor_key") if self._extractor_current() else ()
        for name in [n for n in vars(self) if (n.endswith("_") or n.startswith("_")) and n not in keep]:
            delattr(self, name)

    def _extractor_settings(self) -> tuple:
        """What the feature extractor is built from: backbone, channels kept, seed, weights, device."""
        return self.backbone, self.d, self.seed, self.weights, str(self.device)

    def _extractor_current(self) -> bool:
        """True when a cached extractor exists and was built for the current settings (an extractor
        set by ``load_model`` counts as current)."""
        return (getattr(self, "_extractor", None) is not None
                and getattr(self, "_extractor_key", self._extractor_settings()) == self._extractor_settings())

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def grid_shape(self) -> tuple[int, int]:
        """SOM grid (rows, cols) of the fitted model."""
        self._check_fitted()
        return self.grid_

    @property
    def extractor(self) -> FeatureExtractor:
        """The feature extractor (built lazily, cached until the backbone settings change)."""
        if not self._extractor_current():
            idx = getattr(self, "channel_idx_", None)
            extractor = FeatureExtractor(self.backbone, self.d, self.seed, self.weights, channel_idx=idx)
            if idx is None and self.d is not None and self.d > extractor.total_channels:
                raise ParameterError(f"d={self.d} channels but backbone '{self.backbone}' gives only "
                                     f"{extractor.total_channels}: use d <= {extractor.total_channels} "
                                     "(or None to keep all).")
            if hasattr(self, "stage_offsets_"):  # a fitted model's features keep their correction
                extractor.set_stage_offsets(self.stage_offsets_)
            self._extractor = extractor.to(self.torch_device)
            self._extractor_key = self._extractor_settings()
        return self._extractor

    def features(self, images: np.ndarray, progress: Progress | None = None) -> torch.Tensor:
        """Patch features of uint8 ``(N, S, S, 3)`` images: float32 ``(N, d, S/4, S/4)`` on the model device."""
        images = self._check_images(images)
        cb = counter(progress, Stage.FEATURES, len(images))
        return self.extractor.extract(images, self.batch_size, self.torch_device, cb)

    def _check_images(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        s = self.image_size
        if images.ndim != 4 or images.shape[1:] != (s, s, 3) or images.dtype != np.uint8:
            raise ParameterError(f"images must be uint8 (N, {s}, {s}, 3) (load them with somad.data), "
                                 f"got {images.dtype} {images.shape}.")
        return images

    # ---------------------------------------------------------------------- fit
    def fit(self, images: np.ndarray | ImageFiles, paths: list[str] | None = None,
            progress: Progress | None = None, *, intensity: IntensityRule | None = None,
            patch_store: str = "disk", replay: bool = False) -> "SOMAD":
        """Fit on defect-free images: features, SOM, per-neuron Gaussians, deployable threshold.

        The fit streams: images are read one batch at a time and the patch vectors go to a
        temporary file (:class:`~somad.patches.PatchFile`, removed afterwards) that the SOM epochs
        and the Gaussian statistics read in chunks, so memory does not grow with the number of
        images beyond the per-patch BMU arrays (about 30 bytes a patch, 0.1 MB a 224 px image).

        Args:
            images: uint8 ``(N, S, S, 3)`` with S = ``image_size``, or :class:`~somad.data.ImageFiles`
                (any object with ``len()`` whose slices are such arrays).
            paths: source file of each image (kept for the dashboard's patch gallery).
            progress: ``progress(stage, done, total)`` callback with :class:`~somad.progress.Stage`
                ``FEATURES``, ``SOM``, ``GAUSSIANS``, ``THRESHOLD``.
            intensity: the rule the images were read with (``somad.data.intensity_rule(paths)``);
                None = :data:`~somad.data.EIGHT_BIT`. Kept as ``intensity_`` for later images.
            patch_store: ``"disk"`` (default, bounded memory) or ``"memory"`` (all patch vectors in
                one tensor; the reference the disk path is tested against).
            replay: keep a snapshot of the SOM after every epoch as ``replay_`` (a
                :class:`~somad.replay.Replay`; :data:`somad.replay.REPLAY_HELP`); else ``replay_`` is None.

        Returns:
            self

        Raises:
            ParameterError: a hyperparameter that cannot work, or a wrong image array.
            ResourceError: free disk or memory cannot hold this fit (checked before any work).
        """
        self._validate_params()
        if patch_store not in PATCH_STORES:
            raise ParameterError(f"patch_store must be one of {PATCH_STORES}, got '{patch_store}'.")
        self._reset()
        timer = _Timer()
        n = len(images)
        if n == 0:
            raise ParameterError("fit needs at least one training image.")
        h = w = self.image_size // STRIDES[0]
        check_resources(n, h * w, len(self.extractor.channel_idx), patch_store)
        self.n_train_ = n
        self.feature_shape_ = (h, w)
        self.grid_ = tuple(self.grid) if self.grid is not None else (h, w)
        self.train_paths_ = [str(p) for p in paths] if paths is not None else []
        self.intensity_ = intensity or EIGHT_BIT
        self.som_train_images_ = n
        store = None
        try:
            with timer(Stage.FEATURES):
                self.stage_offsets_ = self.extractor.calibrate().copy()
                store, init = self._extract_patches(images, patch_store, progress)
                self.channel_idx_ = self.extractor.channel_idx.copy()
            with timer(Stage.SOM):
                self._fit_som(store, init, progress, replay)
            with timer(Stage.GAUSSIANS):
                stats = self._fit_gaussians(store, progress)
            with timer(Stage.THRESHOLD):
                self._fit_threshold(store, stats, progress)
        finally:
            if store is not None:
                store.close()
        self.timings_ = timer.seconds
        return self

    def partial_fit(self, images: np.ndarray, paths: list[str] | None = None, progress: Progress | None = None, *,
                    intensity: IntensityRule | None = None) -> "SOMAD":
        """Add defect-free images to a fitted model with the SOM kept fixed (scikit-learn's name for
        incremental learning).

        The result equals :meth:`fit` on the enlarged training set (old images, then ``images``) with
        the SOM weights held at the current ones, which is what the tests check (Gaussians within
        1e-4, threshold within 1e-4 relative). Precisely:

        * every new patch vector gets its exact BMU on the current SOM (as ``fit``'s final BMU
          search) and joins the statistics; the statistics of the old images are recovered from the
          Gaussians (:func:`somad.gaussian.recover_stats`), so every neuron's Gaussian and
          whitening factor is recomputed (the pooled covariance that all neurons shrink toward
          changes too);
        * the new images join the threshold's images (``threshold_indices_``, beyond
          ``cv_max_images`` if need be) and its folds (image ``i`` of that list is in fold
          ``i % folds``): every fold's Gaussians and every threshold image's cross-fitted score are
          recomputed from the kept patch vectors (``cv_features_``) and k nearest neurons
          (``cv_neighbours_``), which give the threshold (unless it was set by hand:
          ``threshold_manual_``) and the display range ``pixel_range_``;
        * ``train_bmu_``, ``train_bmu_dist_``, ``train_paths_`` (the "nearest training patches"
          gallery), ``n_train_`` and the quantization and topographic errors cover the new images.
          ``som_train_images_`` keeps the number of images the SOM itself was trained on.

        Args:
            images: uint8 ``(N, S, S, 3)``, S = ``image_size``, read with the model's intensity rule
                (``somad.data.load_image(path, S, model.intensity_)``).
            paths: source file of each image (for the patch gallery); None = "" each.
            progress: ``progress(stage, done, total)`` with ``FEATURES``, ``GAUSSIANS``, ``THRESHOLD``.
            intensity: the rule the images were read with; it must be the model's ``intensity_``.

        Returns:
            self (``timings_["partial_fit"]`` holds its seconds).

        Raises:
            NotFittedError: the model is not fitted. ModelFileError: the model was saved before
                format 5 and lacks ``cv_features_`` (refit it). ParameterError: a wrong image array,
                ``paths`` of another length, or another intensity rule.
        """
        from .errors import ModelFileError

        self._check_fitted()
        t0 = time.perf_counter()
        hw = self.feature_shape_[0] * self.feature_shape_[1]
        if len(self.cv_features_) != len(self.threshold_indices_) * hw:
            where = getattr(self, "model_dir_", "this model")
            raise ModelFileError(f"{where} was saved before teaching existed (it lacks the threshold images' "
                                 "patch vectors): fit it again with `python -m somad fit` to teach it.")
        images = self._check_images(images)
        if len(images) == 0:
            raise ParameterError("partial_fit needs at least one image.")
        if paths is not None and len(paths) != len(images):
            raise ParameterError(f"partial_fit got {plural(len(images), 'image')} but {plural(len(paths), 'path')}.")
        if intensity is not None and intensity != self.intensity_:
            raise ParameterError(f"the images were read with intensity rule {intensity.describe()} but the model "
                                 f"reads images with {self.intensity_.describe()}: load them with "
                                 "somad.data.load_image(path, model.image_size, model.intensity_).")
        dev = self.torch_device
        n_new = len(images)
        feats = self.extractor.extract(images, self.batch_size, dev, counter(progress, Stage.FEATURES, n_new))
        x_new = feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1])
        kk = min(self.k, len(self.som_weights_))
        near, dist = exact_bmu(x_new, self.som_weights_, k=max(kk, 2) if len(self.som_weights_) > 1 else 1)
        bmu_new = near[:, 0]
        stats = recover_stats(self.means_, self.covariances_, self.counts_, self.som_weights_, self.cov_eps,
                              self.shrinkage)
        stats.add_(accumulate(x_new, bmu_new, self.som_weights_))
        self._set_gaussians(stats)
        if progress:
            progress(Stage.GAUSSIANS, 1, 1)
        # quantization and topographic errors over all training patches, as fit's final BMU search counts them
        p_old = len(self.train_bmu_)
        breaks = round(self.topographic_error_ * p_old) + (
            round(topographic_error(near[:, :2], self.grid_, self.topology) * len(x_new)) if near.shape[1] > 1 else 0)
        self.train_bmu_ = torch.cat([self.train_bmu_, bmu_new.to(self.train_bmu_.device)])
        self.train_bmu_dist_ = torch.cat([self.train_bmu_dist_, dist[:, 0].to(self.train_bmu_dist_.device)])
        self.quantization_error_ = float(self.train_bmu_dist_.mean())
        self.topographic_error_ = breaks / len(self.train_bmu_)
        self.train_paths_ = list(self.train_paths_) + ([str(p) for p in paths] if paths is not None else [""] * n_new)
        first = self.n_train_
        self.n_train_ = first + n_new
        self.threshold_indices_ = np.concatenate([self.threshold_indices_, np.arange(first, first + n_new)])
        x = torch.cat([torch.as_tensor(self.cv_features_, device=dev), x_new])
        neighbours = torch.cat([torch.as_tensor(self.cv_neighbours_, device=dev), near[:, :kk]])
        scores, pixel_maps, _ = self._cross_fitted_scores(x, neighbours, stats, progress)
        self.cv_features_ = x.cpu().numpy()
        self.cv_neighbours_ = neighbours.cpu().numpy()
        self._set_threshold(scores, pixel_maps)
        self.timings_ = {**getattr(self, "timings_", {}), "partial_fit": time.perf_counter() - t0}
        return self

    def _extract_patches(self, images, patch_store: str, progress: Progress | None):
        """Features of every image, batch by batch, into a patch store (rows ``(N*h*w, d)`` in
        image, row, column order), and the SOM's initial weights: the mean feature of each grid
        position over all images, adaptive-average-pooled to the grid, float32 ``(M, d)``."""
        n = len(images)
        d = len(self.extractor.channel_idx)
        step = counter(progress, Stage.FEATURES, n)
        store = PatchFile(d, self.torch_device) if patch_store == "disk" else None
        parts, total = [], None
        try:
            for s in range(0, n, self.batch_size):
                batch = self._check_images(images[s:s + self.batch_size])
                feats = self.extractor.extract(batch, self.batch_size, self.torch_device)
                part = feats.double().sum(0)
                total = part if total is None else total + part
                x = feats.permute(0, 2, 3, 1).reshape(-1, d)
                store.append(x) if store is not None else parts.append(x)
                if step:
                    step(len(batch))
        except BaseException:
            if store is not None:
                store.close()
            raise
        mean = (total / n).float()[None]
        init = F.adaptive_avg_pool2d(mean, self.grid_)[0].permute(1, 2, 0).reshape(-1, d)
        return (store if store is not None else PatchMemory(torch.cat(parts))), init

    def _fit_som(self, store, init: torch.Tensor, progress: Progress | None, replay: bool = False) -> None:
        """SOMAD step 2: the SOM on all patch vectors (a :mod:`somad.patches` store), each neuron
        starting at the mean feature of its grid position; with ``replay``, a snapshot per epoch."""
        som = self._som(self.grid_)
        recorder = ReplayRecorder(store, self.grid_, self.topology, som.schedule()) if replay else None
        som.fit(store, init=init, prior_bmu=_position_prior(self.n_train_, self.feature_shape_, self.grid_,
                                                            self.torch_device),
                progress=for_stage(progress, Stage.SOM), on_epoch=recorder)
        self.replay_ = recorder.result() if recorder is not None else None
        self.som_weights_ = som.weights_
        self.train_bmu_ = som.bmu_
        self.train_bmu_dist_ = som.bmu_dist_
        self.quantization_error_ = som.quantization_error_
        self.topographic_error_ = som.topographic_error_

    def _fit_gaussians(self, store, progress: Progress | None) -> NeuronStats:
        """SOMAD step 3: mean and regularised covariance of the patch vectors each neuron wins,
        from statistics accumulated one chunk at a time."""
        stats = accumulate_chunks(store.chunks(), self.train_bmu_, self.som_weights_)
        self._set_gaussians(stats)
        if progress:
            progress(Stage.GAUSSIANS, 1, 1)
        return stats

    def _fit_threshold(self, store, stats: NeuronStats, progress: Progress | None) -> None:
        """Deployable threshold and display range from cross-fitted training image scores; keeps the
        threshold images' patch vectors and k nearest neurons (``cv_features_``, ``cv_neighbours_``)."""
        n = self.n_train_
        self.threshold_indices_ = np.unique(np.linspace(0, n - 1, min(n, max(1, self.cv_max_images))).round()
                                            ).astype(np.int64)
        x = store.take(self._image_rows(self.threshold_indices_))
        scores, pixel_maps, neighbours = self._cross_fitted_scores(x, None, stats, progress)
        self.cv_features_ = x.cpu().numpy()
        self.cv_neighbours_ = neighbours.cpu().numpy()
        self._set_threshold(scores, pixel_maps)

    def _image_rows(self, images: np.ndarray) -> np.ndarray:
        """Patch rows int64 ``(len(images) * h * w,)`` of training images ``images``, in image, row, column order."""
        hw = self.feature_shape_[0] * self.feature_shape_[1]
        return (np.asarray(images, dtype=np.int64)[:, None] * hw + np.arange(hw)).ravel()

    def _set_threshold(self, scores: np.ndarray, pixel_maps: np.ndarray) -> None:
        """``train_scores_``, the threshold (the ``threshold_percentile`` of ``scores``, unless a version
        set it by hand: ``threshold_manual_``) and the display range (percentiles of the cross-fitted
        pixel maps, topped up to at least the cross-fitted threshold)."""
        self.train_scores_ = scores
        cross_fitted = float(np.percentile(scores, self.threshold_percentile))
        if not getattr(self, "threshold_manual_", None):
            self.threshold_ = cross_fitted
        lo, hi = np.percentile(pixel_maps, PIXEL_RANGE_PERCENTILES)
        self.pixel_range_ = (float(lo), float(max(cross_fitted, hi)))

    def _set_gaussians(self, stats: NeuronStats) -> None:
        self.counts_ = stats.counts.long()
        self.means_, self.covariances_ = gaussians(stats, self.cov_eps, self.shrinkage)
        self.factors_ = whitening_factors(self.covariances_)

    def _cross_fitted_scores(self, x: torch.Tensor, neighbours: torch.Tensor | None, stats: NeuronStats,
                             progress: Progress | None) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        """Scores and subsampled pixel maps of the threshold images, each from Gaussians fitted without
        its fold (the other training images all stay in).

        Args:
            x: float32 ``(T * h * w, d)`` patch vectors of the training images ``threshold_indices_``
                (in that order). Image ``i`` of that list is in fold ``i % folds``, so images appended
                to the list join the existing folds.
            neighbours: int64 ``(T * h * w, k)`` their k nearest neurons (fixed by the SOM), or None to
                search them.
            stats: statistics of every training image.

        Returns:
            ``(scores float32 (T,), pixel values float32 (every 4th pixel of each map), neighbours)``.
        """
        h, w = self.feature_shape_
        hw = h * w
        t = len(x) // hw
        folds = self.cv_folds_used_ = self._threshold_folds(t)
        fold_of = np.arange(t) % folds
        scores = np.zeros(t, dtype=np.float32)
        maps = []
        found = None if neighbours is not None else torch.empty((len(x), min(self.k, len(self.som_weights_))),
                                                                dtype=torch.long, device=x.device)
        for f in range(folds):
            members = np.flatnonzero(fold_of == f)
            rows = self._image_rows(members)
            rows_t = torch.as_tensor(rows, device=x.device)
            xf = x[rows_t]
            if folds > 1:
                train_rows = torch.as_tensor(self._image_rows(self.threshold_indices_[members]),
                                             device=self.train_bmu_.device)
                held = accumulate(xf, self.train_bmu_[train_rows].to(x.device), self.som_weights_)
                means, covs = gaussians(stats - held, self.cov_eps, self.shrinkage)
                factors = whitening_factors(covs)
            else:
                means, factors = self.means_, self.factors_
            if neighbours is None:
                ps = score_patches(xf, self.som_weights_, means, factors, self.k)
                found[rows_t] = ps.neighbours
                patch = ps.scores
            else:
                nb = neighbours[rows_t]
                patch = torch.cat([mahalanobis_pairs(xf[s:s + SCORE_CHUNK], nb[s:s + SCORE_CHUNK], means, factors
                                                     ).min(1).values for s in range(0, len(xf), SCORE_CHUNK)])
            patch_maps = patch.reshape(len(members), h, w)
            pmaps = anomaly_maps(patch_maps, self.image_size, self.blur_sigma)
            scores[members] = image_scores(self.image_score, patch_maps, pmaps).cpu().numpy()
            maps.append(pmaps[:, ::PIXEL_RANGE_STRIDE, ::PIXEL_RANGE_STRIDE].cpu().numpy().ravel())
            if progress:
                progress(Stage.THRESHOLD, f + 1, folds)
        return scores, np.concatenate(maps), neighbours if neighbours is not None else found

    def _threshold_folds(self, t: int) -> int:
        """Folds of the threshold's cross-fitting for ``t`` scored training images: ``cv_folds``,
        leave-one-out (``t``) when 2 <= t < cv_folds, 1 (in-sample, with a warning) for one image."""
        if self.cv_folds <= 1:
            return 1
        if t == 1:
            warnings.warn("only 1 training image is scored for the threshold: no held-out score is possible, so "
                          f"the threshold is the percentile {self.threshold_percentile:g} of its in-sample score "
                          "(low: expect false alarms). Fit on 2 or more images.", UserWarning, stacklevel=4)
        return min(self.cv_folds, t)

    @property
    def threshold_rule(self) -> str:
        """How ``threshold_`` was set, in words (saved as ``threshold_rule`` in ``config.json``): the rule
        a version gave it by hand (``threshold_manual_``, see :func:`somad.versions.save_threshold`),
        else the cross-fitted percentile."""
        self._check_fitted()
        if getattr(self, "threshold_manual_", None):
            return self.threshold_manual_
        t, folds = len(self.train_scores_), self.cv_folds_used_
        how = ("in-sample" if folds == 1 else
               f"{folds}-fold (leave-one-out) cross-fitted" if folds == t else f"{folds}-fold cross-fitted")
        return f"percentile {self.threshold_percentile:g} of {how} scores of {t} training images"

    # -------------------------------------------------------------------- score
    def _maps_from_features(self, feats: torch.Tensor, means=None, factors=None,
                            return_patches: bool = False) -> AnomalyMaps:
        means = self.means_ if means is None else means
        factors = self.factors_ if factors is None else factors
        n, d, h, w = feats.shape
        x = feats.permute(0, 2, 3, 1).reshape(-1, d)
        ps = score_patches(x, self.som_weights_, means, factors, self.k)
        patch_maps = ps.scores.reshape(n, h, w)
        maps = anomaly_maps(patch_maps, self.image_size, self.blur_sigma)
        scores = image_scores(self.image_score, patch_maps, maps)
        return AnomalyMaps(scores.cpu().numpy(), maps.cpu().numpy(), ps if return_patches else None)

    def patch_scores(self, features: torch.Tensor) -> PatchScores:
        """Score patch features float32 ``(N, d, h, w)``; results are flat over (N, h, w) in C order."""
        self._check_fitted()
        n, d, h, w = features.shape
        x = features.to(self.torch_device).permute(0, 2, 3, 1).reshape(-1, d)
        return score_patches(x, self.som_weights_, self.means_, self.factors_, self.k)

    def anomaly_maps(self, images: np.ndarray, progress: Progress | None = None, *,
                     return_patches: bool = False) -> AnomalyMaps:
        """Image scores and pixel anomaly maps (SOMAD step 4), in batches of ``batch_size``.

        Args:
            images: uint8 ``(N, S, S, 3)``.
            progress: ``progress(Stage.SCORE, done, total)`` callback.
            return_patches: also keep the :class:`PatchScores` of all patches (flat over N, h, w).

        Returns:
            :class:`AnomalyMaps` in Mahalanobis units (never normalised per image).

        Raises:
            NotFittedError: the model is not fitted. ParameterError: a wrong image array.
        """
        self._check_fitted()
        images = self._check_images(images)
        parts = []
        for s in range(0, len(images), self.batch_size):
            feats = self.extractor.extract(images[s:s + self.batch_size], self.batch_size, self.torch_device)
            res = self._maps_from_features(feats, return_patches=return_patches)
            if res.patches is not None:
                res.patches = PatchScores(*(t.cpu() for t in (res.patches.scores, res.patches.neighbours,
                                                                res.patches.mahalanobis)))
            parts.append(res)
            if progress:
                progress(Stage.SCORE, min(s + self.batch_size, len(images)), len(images))
        patches = None
        if return_patches:
            patches = PatchScores(*(torch.cat([getattr(p.patches, f) for p in parts])
                                    for f in ("scores", "neighbours", "mahalanobis")))
        return AnomalyMaps(np.concatenate([p.scores for p in parts]), np.concatenate([p.maps for p in parts]),
                           patches)

    def score_samples(self, images: np.ndarray) -> np.ndarray:
        """Image anomaly scores float32 ``(N,)`` by the ``image_score`` rule (higher = more anomalous).

        Note: scikit-learn's ``IsolationForest.score_samples`` is higher for *normal* samples; somad's
        scores are Mahalanobis distances, higher for anomalies, as in the SOMAD paper.
        """
        return self.anomaly_maps(images).scores

    def decision_function(self, images: np.ndarray) -> np.ndarray:
        """``score_samples - threshold_``, float32 ``(N,)``: >= 0 is anomalous (see :mod:`somad.decision`)."""
        self._check_fitted()
        return self.score_samples(images) - np.float32(self.threshold_)

    def predict(self, images: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """Verdicts bool ``(N,)``, True = anomalous, by :func:`somad.decision.is_anomalous`
        at ``threshold`` (default: the deployable ``threshold_``)."""
        self._check_fitted()
        thr = self.threshold_ if threshold is None else threshold
        return is_anomalous(self.score_samples(images), thr)

    # ---------------------------------------------------------------- map views
    def u_matrix(self) -> np.ndarray:
        """U-matrix float32 ``(rows, cols)``."""
        self._check_fitted()
        return u_matrix(self.som_weights_, self.grid_, self.topology)

    def hit_map(self) -> np.ndarray:
        """Training patches won per neuron, int64 ``(rows, cols)``."""
        self._check_fitted()
        return hit_map(self.train_bmu_, self.grid_)

    def component_plane(self, dim: int) -> np.ndarray:
        """Weight of feature ``dim`` for every neuron, float32 ``(rows, cols)``."""
        self._check_fitted()
        return self.som_weights_[:, dim].reshape(self.grid_).cpu().numpy()

    def to(self, device: str) -> "SOMAD":
        """Move the fitted tensors (those of :data:`FITTED_TENSORS` kept on the device, and the
        whitening factors) and the extractor to ``device``; returns self.

        Raises:
            ParameterError: ``device`` is unknown or not on this machine.
        """
        check_device(device)
        self.device = str(device)
        dev = self.torch_device
        names = [n for n, spec in FITTED_TENSORS.items() if spec.on_device] + ["factors_"]
        for name in names:
            if hasattr(self, name):
                setattr(self, name, getattr(self, name).to(dev))
        if getattr(self, "_extractor", None) is not None:
            self._extractor.to(dev)
            self._extractor_key = self._extractor_settings()
        return self


def _position_prior(n: int, fmap: tuple[int, int], grid: tuple[int, int], device) -> torch.Tensor:
    """Grid neuron at the same relative position as each patch: int64 ``(n * h * w,)``."""
    h, w = fmap
    gr = (torch.arange(h, device=device) * grid[0]) // h
    gc = (torch.arange(w, device=device) * grid[1]) // w
    per_image = (gr[:, None] * grid[1] + gc[None, :]).reshape(-1)
    return per_image.repeat(n)


class _Timer:
    """Wall-clock seconds per stage: ``with timer(Stage.SOM): ...``; ``timer.seconds`` maps stage names."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: Stage):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage.value] = self.seconds.get(stage.value, 0.0) + time.perf_counter() - t0
