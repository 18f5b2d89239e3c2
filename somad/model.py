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

import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .errors import NotFittedError
from .features import DEFAULT_BACKBONE, FeatureExtractor
from .gaussian import NeuronStats, accumulate, gaussians, whitening_factors
from .scoring import PatchScores, anomaly_maps, score_patches
from .som import SOM, hit_map, u_matrix

Progress = Callable[[str, int, int], None]
"""Progress callback: ``progress(stage, done, total)``."""

HYPERPARAMETERS = ("backbone", "image_size", "d", "grid", "topology", "epochs", "sigma", "sigma_final",
                   "learning_rate", "learning_rate_final", "som_backend", "search_radius", "k",
                   "blur_sigma", "cov_eps", "shrinkage", "threshold_percentile", "cv_folds", "cv_max_images", "seed")


class SOMAD:
    """Self-Organizing Map anomaly detector.

    Args:
        backbone: registry or timm model name (default ``efficientnet_lite0``, offline).
        weights: optional local checkpoint for the backbone (not saved in the model's config).
        image_size: side in pixels every image is resized to (whole frame, no crop).
        d: feature channels kept (random subset, fixed by ``seed``).
        grid: SOM (rows, cols); ``None`` = the feature-map size (image_size / 4).
        topology: ``"rectangular"`` or ``"hexagonal"``.
        epochs, sigma, sigma_final, learning_rate, learning_rate_final, search_radius: see :class:`SOM`.
        som_backend: ``"torch"`` or ``"minisom"``.
        k: nearest neurons in the score (paper: 4).
        blur_sigma: Gaussian blur of the anomaly map, in pixels (paper: 4).
        cov_eps: covariance ridge (paper: 0.01).
        shrinkage: pseudo-samples of pooled covariance for neurons with few vectors.
        threshold_percentile: percentile of cross-fitted training image scores used as threshold.
        cv_folds: folds of the cross-fitting (0 or 1: score the training images in-sample).
        cv_max_images: at most this many training images (evenly spaced) are scored for the threshold.
        device: ``"cpu"``, ``"cuda"`` or a torch device.
        seed: seed of channel selection and of any random initialisation.
        batch_size: images per feature/scoring batch.

    Fitted attributes (trailing underscore):
        channel_idx_: int64 ``(d,)``. feature_shape_: (h, w) feature cells.
        som_weights_: float32 ``(M, d)``, M = rows * cols. means_: float32 ``(M, d)``.
        covariances_: float32 ``(M, d, d)``. counts_: int64 ``(M,)`` training patches won.
        train_bmu_: int64 ``(N_train * h * w,)`` BMU of each training patch, patch ``p`` being
            image ``p // (h*w)``, row ``(p // w) % h``, col ``p % w``. train_bmu_dist_: float32, same shape.
        train_paths_: list of str. train_scores_: float32 ``(T,)`` cross-fitted scores of the training
            images ``threshold_indices_`` int64 ``(T,)``, T = min(N_train, cv_max_images).
        threshold_: float image threshold. pixel_range_: (lo, hi) display range of pixel scores.
        quantization_error_, topographic_error_: SOM quality on the training vectors.
        timings_: seconds per fit stage.
    """

    def __init__(self, backbone: str = DEFAULT_BACKBONE, weights: str | None = None, image_size: int = 224,
                 d: int | None = 100, grid: tuple[int, int] | None = None, topology: str = "rectangular",
                 epochs: int = 10, sigma: float | None = None, sigma_final: float = 0.5,
                 learning_rate: float = 1.0, learning_rate_final: float = 1.0, som_backend: str = "torch",
                 search_radius: int | None = 4, k: int = 4, blur_sigma: float = 4.0, cov_eps: float = 0.01,
                 shrinkage: float = 10.0, threshold_percentile: float = 99.0, cv_folds: int = 5,
                 cv_max_images: int = 100,
                 device: str = "cpu", seed: int = 0, batch_size: int = 32):
        self.backbone = backbone
        self.weights = weights
        self.image_size = image_size
        self.d = d
        self.grid = tuple(grid) if grid is not None else None
        self.topology = topology
        self.epochs = epochs
        self.sigma = sigma
        self.sigma_final = sigma_final
        self.learning_rate = learning_rate
        self.learning_rate_final = learning_rate_final
        self.som_backend = som_backend
        self.search_radius = search_radius
        self.k = k
        self.blur_sigma = blur_sigma
        self.cov_eps = cov_eps
        self.shrinkage = shrinkage
        self.threshold_percentile = threshold_percentile
        self.cv_folds = cv_folds
        self.cv_max_images = cv_max_images
        self.device = device
        self.seed = seed
        self.batch_size = batch_size
        self._validate()

    # ------------------------------------------------------------------ helpers
    def _validate(self) -> None:
        if self.image_size < 32 or self.image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16 and >= 32, got {self.image_size}.")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}.")
        if not 0 < self.threshold_percentile <= 100:
            raise ValueError(f"threshold_percentile must be in (0, 100], got {self.threshold_percentile}.")
        if self.blur_sigma < 0 or self.cov_eps <= 0 or self.shrinkage < 0:
            raise ValueError("blur_sigma and shrinkage must be >= 0 and cov_eps > 0.")
        if self.d is not None and self.d < 1:
            raise ValueError(f"d (channels kept) must be >= 1, got {self.d}.")
        if self.grid is not None and (len(self.grid) != 2 or min(self.grid) < 1):
            raise ValueError(f"grid must be two positive ints (rows, cols), got {self.grid}.")
        # the SOM checks its own hyperparameters (topology, backend, epochs, sigma, learning rates)
        SOM(self.grid or (1, 1), self.topology, self.sigma, self.sigma_final, self.learning_rate,
            self.learning_rate_final, self.epochs, self.som_backend, "cpu", self.search_radius, self.seed)

    def get_params(self) -> dict:
        """Hyperparameters as a JSON-ready dict (``weights`` and ``device`` excluded)."""
        out = {name: getattr(self, name) for name in HYPERPARAMETERS}
        out["grid"] = list(self.grid) if self.grid is not None else None
        return out

    def _check_fitted(self) -> None:
        if not hasattr(self, "means_"):
            raise NotFittedError("this SOMAD model is not fitted: call fit() or load a saved model.")

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
        """The feature extractor (built lazily, cached)."""
        if getattr(self, "_extractor", None) is None:
            idx = getattr(self, "channel_idx_", None)
            self._extractor = FeatureExtractor(self.backbone, self.d, self.seed, self.weights, channel_idx=idx)
            self._extractor.to(self.torch_device)
        return self._extractor

    def features(self, images: np.ndarray, progress: Progress | None = None) -> torch.Tensor:
        """Patch features of uint8 ``(N, S, S, 3)`` images: float32 ``(N, d, S/4, S/4)`` on the model device."""
        images = self._check_images(images)
        cb = _counter(progress, "features", len(images))
        return self.extractor.extract(images, self.batch_size, self.torch_device, cb)

    def _check_images(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        s = self.image_size
        if images.ndim != 4 or images.shape[1:] != (s, s, 3) or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, {s}, {s}, 3) (load them with somad.data), "
                             f"got {images.dtype} {images.shape}.")
        return images

    # ---------------------------------------------------------------------- fit
    def fit(self, images: np.ndarray, paths: list[str] | None = None, progress: Progress | None = None) -> "SOMAD":
        """Fit on defect-free images.

        Args:
            images: uint8 ``(N, S, S, 3)`` with S = ``image_size``.
            paths: source file of each image (kept for the dashboard's patch gallery).
            progress: ``progress(stage, done, total)`` callback; stages are
                ``features``, ``som``, ``gaussians``, ``threshold``.

        Returns:
            self

        Raises:
            ValueError: wrong image array, or a grid larger than the training set can fill.
        """
        self._validate()
        timings = {}
        t0 = time.perf_counter()
        self._extractor = None
        if hasattr(self, "channel_idx_"):
            del self.channel_idx_
        feats = self.features(images, progress)
        self.channel_idx_ = self.extractor.channel_idx.copy()
        n, d, h, w = feats.shape
        self.feature_shape_ = (h, w)
        self.grid_ = tuple(self.grid) if self.grid is not None else (h, w)
        timings["features"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        x = feats.permute(0, 2, 3, 1).reshape(-1, d)
        init = F.adaptive_avg_pool2d(feats.mean(0, keepdim=True), self.grid_)[0]
        init = init.permute(1, 2, 0).reshape(-1, d)
        som = SOM(self.grid_, self.topology, self.sigma, self.sigma_final, self.learning_rate,
                  self.learning_rate_final, self.epochs, self.som_backend, self.torch_device,
                  self.search_radius, self.seed)
        som.fit(x, init=init, prior_bmu=_position_prior(n, (h, w), self.grid_, x.device),
                progress=_stage(progress, "som"))
        self.som_weights_ = som.weights_
        self.train_bmu_ = som.bmu_
        self.train_bmu_dist_ = som.bmu_dist_
        self.quantization_error_ = som.quantization_error_
        self.topographic_error_ = som.topographic_error_
        timings["som"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        stats = accumulate(x, som.bmu_, som.weights_)
        self._set_gaussians(stats)
        if progress:
            progress("gaussians", 1, 1)
        timings["gaussians"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        self.train_paths_ = [str(p) for p in paths] if paths is not None else []
        self.threshold_indices_ = np.unique(np.linspace(0, n - 1, min(n, max(1, self.cv_max_images))).round()
                                            ).astype(np.int64)
        self.train_scores_, pixel_maps = self._cross_fitted_scores(feats, x, stats, self.threshold_indices_,
                                                                   progress)
        self.threshold_ = float(np.percentile(self.train_scores_, self.threshold_percentile))
        lo = float(np.percentile(pixel_maps, 1.0))
        hi = float(max(self.threshold_, np.percentile(pixel_maps, 99.99)))
        self.pixel_range_ = (lo, hi)
        timings["threshold"] = time.perf_counter() - t0
        self.n_train_ = n
        self.timings_ = timings
        return self

    def _set_gaussians(self, stats: NeuronStats) -> None:
        self.counts_ = stats.counts.long()
        self.means_, self.covariances_ = gaussians(stats, self.cov_eps, self.shrinkage)
        self.factors_ = whitening_factors(self.covariances_)

    def _cross_fitted_scores(self, feats: torch.Tensor, x: torch.Tensor, stats: NeuronStats,
                             indices: np.ndarray, progress: Progress | None) -> tuple[np.ndarray, np.ndarray]:
        """Scores and subsampled pixel maps of training images ``indices``, each from Gaussians fitted
        without its fold (the other training images all stay in)."""
        n, _, h, w = feats.shape
        t = len(indices)
        folds = self.cv_folds if self.cv_folds and self.cv_folds > 1 and t >= self.cv_folds else 1
        fold_of = np.arange(t) % folds
        scores = np.zeros(t, dtype=np.float32)
        maps = []
        per_image = h * w
        for f in range(folds):
            members = indices[fold_of == f]
            if folds > 1:
                rows = torch.as_tensor((members[:, None] * per_image + np.arange(per_image)).ravel(),
                                       device=x.device)
                held = accumulate(x[rows], self.train_bmu_[rows], self.som_weights_)
                means, covs = gaussians(stats - held, self.cov_eps, self.shrinkage)
                factors = whitening_factors(covs)
            else:
                means, factors = self.means_, self.factors_
            s, mp = self._maps_from_features(feats[members], means, factors)
            scores[fold_of == f] = s
            maps.append(mp[:, ::4, ::4].ravel())
            if progress:
                progress("threshold", f + 1, folds)
        return scores, np.concatenate(maps)

    # -------------------------------------------------------------------- score
    def _maps_from_features(self, feats: torch.Tensor, means=None, factors=None,
                            keep: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
        means = self.means_ if means is None else means
        factors = self.factors_ if factors is None else factors
        n, d, h, w = feats.shape
        x = feats.permute(0, 2, 3, 1).reshape(-1, d)
        ps = score_patches(x, self.som_weights_, means, factors, self.k)
        maps = anomaly_maps(ps.scores.reshape(n, h, w), self.image_size, self.blur_sigma)
        if keep is not None:
            keep["patch_scores"] = ps
        flat = maps.reshape(n, -1)
        return flat.max(1).values.cpu().numpy(), maps.cpu().numpy()

    def patch_scores(self, features: torch.Tensor) -> PatchScores:
        """Score patch features float32 ``(N, d, h, w)``; results are flat over (N, h, w) in C order."""
        self._check_fitted()
        n, d, h, w = features.shape
        x = features.to(self.torch_device).permute(0, 2, 3, 1).reshape(-1, d)
        return score_patches(x, self.som_weights_, self.means_, self.factors_, self.k)

    def anomaly_maps(self, images: np.ndarray, progress: Progress | None = None,
                     return_patches: bool = False):
        """Image scores and pixel anomaly maps.

        Args:
            images: uint8 ``(N, S, S, 3)``.
            return_patches: also return the :class:`PatchScores` of all patches (flat over N, h, w).

        Returns:
            ``(scores float32 (N,), maps float32 (N, S, S))`` in Mahalanobis units, plus the
            patch scores when asked.
        """
        self._check_fitted()
        images = self._check_images(images)
        scores, maps, patches = [], [], []
        for s in range(0, len(images), self.batch_size):
            feats = self.extractor.extract(images[s:s + self.batch_size], self.batch_size, self.torch_device)
            keep = {} if return_patches else None
            sc, mp = self._maps_from_features(feats, keep=keep)
            scores.append(sc)
            maps.append(mp)
            if return_patches:
                patches.append(keep["patch_scores"])
            if progress:
                progress("score", min(s + self.batch_size, len(images)), len(images))
        out = (np.concatenate(scores), np.concatenate(maps))
        if return_patches:
            cat = PatchScores(*(torch.cat([getattr(p, f) for p in patches]).cpu()
                                for f in ("scores", "neighbours", "mahalanobis")))
            return out + (cat,)
        return out

    def score(self, images: np.ndarray) -> np.ndarray:
        """Image anomaly scores float32 ``(N,)`` (maximum of each anomaly map)."""
        return self.anomaly_maps(images)[0]

    def predict(self, images: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """Verdicts bool ``(N,)``: score > threshold (default: the deployable ``threshold_``)."""
        thr = self.threshold_ if threshold is None else threshold
        return self.score(images) > thr

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
        """Move the fitted tensors and the extractor to ``device``; returns self."""
        self.device = str(device)
        dev = self.torch_device
        for name in ("som_weights_", "means_", "covariances_", "factors_", "train_bmu_", "train_bmu_dist_",
                     "counts_"):
            if hasattr(self, name):
                setattr(self, name, getattr(self, name).to(dev))
        if getattr(self, "_extractor", None) is not None:
            self._extractor.to(dev)
        return self


def _position_prior(n: int, fmap: tuple[int, int], grid: tuple[int, int], device) -> torch.Tensor:
    """Grid neuron at the same relative position as each patch: int64 ``(n * h * w,)``."""
    h, w = fmap
    gr = (torch.arange(h, device=device) * grid[0]) // h
    gc = (torch.arange(w, device=device) * grid[1]) // w
    per_image = (gr[:, None] * grid[1] + gc[None, :]).reshape(-1)
    return per_image.repeat(n)


def _stage(progress: Progress | None, stage: str):
    if progress is None:
        return None
    return lambda done, total: progress(stage, done, total)


def _counter(progress: Progress | None, stage: str, total: int):
    if progress is None:
        return None
    state = {"done": 0}

    def step(k: int) -> None:
        state["done"] += k
        progress(stage, state["done"], total)

    return step
