"""Self-Organizing Map: grid geometry, batch training, BMU search and map diagnostics.

Batch SOM (Kohonen, "Essentials of the self-organizing map", Neural Networks
37, 2013, Sec. 4): each epoch assigns every sample to its best-matching unit
(BMU), then sets each neuron to the neighbourhood-weighted mean of the samples
won by the neurons around it::

    W_batch[j] = sum_i h(j, bmu_i) x_i / sum_i h(j, bmu_i),   h = exp(-|r_j - r_b|^2 / (2 sigma_t^2))
    W[j]      <- (1 - lr_t) W[j] + lr_t W_batch[j]

``sigma_t`` decays exponentially from ``sigma`` to ``sigma_final`` and
``lr_t`` linearly from ``learning_rate`` to ``learning_rate_final`` over the
epochs. Two backends share this interface: ``torch`` (vectorised, CPU or CUDA)
and ``minisom`` (the reference: MiniSom's own ``train_batch_offline``, run one epoch
at a time with that epoch's ``sigma_t`` and ``lr_t``, on the same lattice as somad).

The torch backend's algorithmic win is a *local BMU search*: the map changes
little from one epoch to the next, so each sample looks for its BMU only in a
window of ``search_radius`` neurons around its previous BMU (its grid position
in the first epoch, when a positional prior is given). Samples are grouped by
tiles of the grid so each tile is one matrix product. After the last epoch
one exact search over all neurons gives the final BMUs, the quantization error
and the topographic error, so those are exact, never approximations.

Grid coordinates: neuron ``j`` is at row ``j // W``, column ``j % W``. On a
hexagonal grid odd rows are shifted right by half a cell and rows are
``sqrt(3)/2`` apart, so the six neighbours are at distance 1.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from .patches import PatchFile, PatchMemory

TOPOLOGIES = ("rectangular", "hexagonal")

RECT_NEIGHBOUR_LIMIT = 1.42
"""Rectangular 8-neighbours lie 1 or sqrt(2) = 1.414 cells apart, the next ring 2 cells: the limit separates them."""
HEX_NEIGHBOUR_LIMIT = 1.01
"""Hexagonal neighbours lie 1 cell apart, the next ring sqrt(3) = 1.73 cells: 0.01 absorbs float rounding."""
SEARCH_TILE = 8
"""Tile side (neurons) of the local BMU search: with the default radius 4 a tile looks at 16x16 = 256 of the
56x56 neurons, while 49 tiles keep the per-tile overhead (one matrix product each) small."""


def grid_coordinates(shape: tuple[int, int], topology: str = "rectangular") -> np.ndarray:
    """Cartesian coordinates of every neuron, float64 ``(H*W, 2)`` as (x, y), in cell units.

    Raises:
        ValueError: unknown topology.
    """
    if topology not in TOPOLOGIES:
        raise ValueError(f"topology must be one of {TOPOLOGIES}, got '{topology}'.")
    h, w = shape
    rows, cols = np.divmod(np.arange(h * w), w)
    x = cols.astype(np.float64)
    y = rows.astype(np.float64)
    if topology == "hexagonal":
        x = x + 0.5 * (rows % 2)
        y = y * math.sqrt(3) / 2
    return np.stack([x, y], axis=1)


def neighbour_pairs(shape: tuple[int, int], topology: str = "rectangular") -> np.ndarray:
    """Adjacent neuron pairs ``(P, 2)`` int64, each pair once (i < j).

    Rectangular grids use the 8-neighbourhood (diagonals included, as MiniSom
    does for the topographic error), hexagonal grids the 6-neighbourhood.
    """
    xy = grid_coordinates(shape, topology)
    limit = _neighbour_limit(topology)
    pairs = []
    h, w = shape
    for j in range(h * w):
        r = j // w
        cand = np.arange(j + 1, min(h * w, (r + 2) * w))
        dist = np.linalg.norm(xy[cand] - xy[j], axis=1)
        pairs.extend((j, int(c)) for c in cand[dist < limit])
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


def _neighbour_limit(topology: str) -> float:
    """Largest distance (cells) between two grid neighbours, with a margin below the next ring."""
    return HEX_NEIGHBOUR_LIMIT if topology == "hexagonal" else RECT_NEIGHBOUR_LIMIT


def exact_bmu(x: torch.Tensor, weights: torch.Tensor, k: int = 1,
              chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest neurons (Euclidean) of every vector, exact, in chunks.

    Args:
        x: float32 ``(N, d)``.
        weights: float32 ``(M, d)`` neuron weights on the same device.
        k: neighbours wanted (1 = BMU).
        chunk: rows per distance block; memory is ``chunk * M`` floats.

    Returns:
        ``(idx int64 (N, k), dist float32 (N, k))``, sorted by distance, dist in feature units.
    """
    w2 = (weights * weights).sum(1)
    idx = torch.empty((len(x), k), dtype=torch.long, device=x.device)
    dist = torch.empty((len(x), k), dtype=torch.float32, device=x.device)
    for s in range(0, len(x), chunk):
        xs = x[s:s + chunk]
        d2 = torch.addmm(w2, xs, weights.T, alpha=-2.0)  # |w|^2 - 2 x.w ; |x|^2 added below
        if k == 1:
            val, ind = d2.min(dim=1, keepdim=True)
        else:
            val, ind = smallest_k(d2, k)
        val = val + (xs * xs).sum(1, keepdim=True)
        idx[s:s + chunk] = ind
        dist[s:s + chunk] = val.clamp_min_(0).sqrt_()
    return idx, dist


TOPK_BLOCK = 64
"""Columns per block in :func:`smallest_k`."""


def smallest_k(d: torch.Tensor, k: int, block: int = TOPK_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` smallest values of each row of ``d`` float ``(n, M)`` and their columns, ascending:
    ``d.topk(k, largest=False)``, exact, in about two thirds of its time on the CPU for ``M`` in the thousands.

    Rows are cut into blocks of ``block`` columns. The ``k`` smallest values lie in the ``k`` blocks
    with the smallest block minima (a block holding one of them has its minimum at or below the
    ``k``-th smallest value, and at most ``k`` blocks can), so one vectorised block-minimum pass, a
    top-k over the block minima and a top-k over ``k * block`` gathered values replace the per-row
    partial sort over all ``M`` columns. Columns past the last whole block join the candidates as they are.
    """
    n, m = d.shape
    whole = (m // block) * block
    if whole < 4 * k * block:  # few blocks: the plain top-k is as fast
        return d.topk(k, dim=1, largest=False)
    blocks = d[:, :whole].view(n, whole // block, block) if d.is_contiguous() else \
        d[:, :whole].reshape(n, whole // block, block)
    first = blocks.amin(2).topk(k, dim=1, largest=False, sorted=False).indices * block  # (n, k) first columns
    cols = (first[:, :, None] + torch.arange(block, device=d.device)).reshape(n, k * block)
    if whole < m:
        cols = torch.cat([cols, torch.arange(whole, m, device=d.device).expand(n, m - whole)], 1)
    val, pos = d.gather(1, cols).topk(k, dim=1, largest=False)
    return val, cols.gather(1, pos)


def exact_quality(source, weights: torch.Tensor, shape: tuple[int, int], topology: str = "rectangular"
                  ) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """Exact BMU of every vector of a chunked patch source (:mod:`somad.patches`), one chunk at a time.

    Returns:
        ``(bmu int64 (N,), dist float32 (N,), quantization error, topographic error)``: the mean BMU
        distance (feature units) and the fraction of vectors whose two nearest neurons are not grid neighbours.
    """
    n = source.n_rows
    bmu = torch.empty(n, dtype=torch.long, device=weights.device)
    bmu_dist = torch.empty(n, dtype=torch.float32, device=weights.device)
    breaks = 0
    for start, xc in source.chunks():
        idx, dist = exact_bmu(xc, weights, k=min(2, len(weights)))
        bmu[start:start + len(xc)] = idx[:, 0]
        bmu_dist[start:start + len(xc)] = dist[:, 0]
        # the chunk's fraction times its size is its count of breaks (exact below 2**24 rows a chunk)
        if idx.shape[1] == 2:
            breaks += round(topographic_error(idx, shape, topology) * len(xc))
    return bmu, bmu_dist, float(bmu_dist.mean()), breaks / n


class _TileSearch:
    """Local BMU search: samples grouped by the grid tile of their previous BMU."""

    def __init__(self, shape: tuple[int, int], tile: int, radius: int, device: torch.device):
        h, w = shape
        rows, cols = np.divmod(np.arange(h * w), w)
        th, tw = math.ceil(h / tile), math.ceil(w / tile)
        self.tile_of = torch.as_tensor((rows // tile) * tw + cols // tile, device=device)
        self.candidates = []
        for t in range(th * tw):
            r0, c0 = (t // tw) * tile, (t % tw) * tile
            rr = np.arange(max(0, r0 - radius), min(h, r0 + tile + radius))
            cc = np.arange(max(0, c0 - radius), min(w, c0 + tile + radius))
            self.candidates.append(torch.as_tensor((rr[:, None] * w + cc[None, :]).ravel(), device=device))

    def __call__(self, x: torch.Tensor, weights: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        tiles = self.tile_of[prev]
        order = torch.argsort(tiles)
        counts = torch.bincount(tiles, minlength=len(self.candidates)).tolist()
        xs = x[order]
        out = torch.empty_like(prev)
        w2 = (weights * weights).sum(1)
        start = 0
        for t, n in enumerate(counts):
            if n == 0:
                continue
            cand = self.candidates[t]
            d2 = torch.addmm(w2[cand], xs[start:start + n], weights[cand].T, alpha=-2.0)
            out[order[start:start + n]] = cand[d2.argmin(dim=1)]
            start += n
        return out


class SOM:
    """A 2-D self-organizing map with a scikit-learn style interface.

    Args:
        shape: grid (rows, cols).
        topology: ``"rectangular"`` or ``"hexagonal"``.
        sigma: initial neighbourhood radius in cells (default ``max(shape) / 8``).
        sigma_final: final neighbourhood radius in cells.
        learning_rate, learning_rate_final: blend of the batch update, linearly decayed.
        epochs: passes over all training vectors.
        backend: ``"torch"`` or ``"minisom"``.
        device: torch device for the ``torch`` backend.
        search_radius: local BMU search window in cells (``torch``; ``None`` = exact every epoch).
        seed: seed of the random initialisation when no ``init`` is given.

    Fitted attributes:
        weights_: float32 ``(H*W, d)`` neuron weights (codebook).
        bmu_: int64 ``(N,)`` BMU of each training vector (exact).
        bmu_dist_: float32 ``(N,)`` Euclidean distance to it.
        quantization_error_: mean of ``bmu_dist_``.
        topographic_error_: fraction of vectors whose two nearest neurons are not adjacent.

    Raises:
        ValueError: bad hyperparameters (named in the message).
    """

    def __init__(self, shape: tuple[int, int] = (56, 56), topology: str = "rectangular",
                 sigma: float | None = None, sigma_final: float = 0.5, learning_rate: float = 1.0,
                 learning_rate_final: float = 1.0, epochs: int = 10, backend: str = "torch",
                 device: str | torch.device = "cpu", search_radius: int | None = 4, seed: int = 0):
        self.shape = (int(shape[0]), int(shape[1]))
        self.topology = topology
        self.sigma = sigma
        self.sigma_final = sigma_final
        self.learning_rate = learning_rate
        self.learning_rate_final = learning_rate_final
        self.epochs = epochs
        self.backend = backend
        self.device = device
        self.search_radius = search_radius
        self.seed = seed
        self._validate()

    def _validate(self) -> None:
        if min(self.shape) < 1:
            raise ValueError(f"grid shape must be positive, got {self.shape}.")
        if self.n_neurons < 2:
            raise ValueError(f"the SOM grid {self.shape[0]}x{self.shape[1]} has one neuron: a map needs at least 2 "
                             "(the topographic error compares each vector's two nearest neurons, and one neuron "
                             "is a single Gaussian, not a map): use a grid of at least 1x2.")
        if self.topology not in TOPOLOGIES:
            raise ValueError(f"topology must be one of {TOPOLOGIES}, got '{self.topology}'.")
        if self.backend not in SOM_BACKENDS:
            raise ValueError(f"som backend must be one of {tuple(SOM_BACKENDS)}, got '{self.backend}'.")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}.")
        if not 0 < self.learning_rate <= 1 or not 0 < self.learning_rate_final <= 1:
            raise ValueError("learning rates must be in (0, 1].")
        if self.sigma is not None and self.sigma <= 0 or self.sigma_final <= 0:
            raise ValueError("sigma and sigma_final must be > 0.")

    @property
    def n_neurons(self) -> int:
        return self.shape[0] * self.shape[1]

    def schedule(self) -> list[tuple[float, float]]:
        """``(sigma_t, lr_t)`` for each epoch."""
        s0 = self.sigma if self.sigma is not None else max(self.shape) / 8
        s1 = min(self.sigma_final, s0)
        out = []
        for t in range(self.epochs):
            f = t / max(1, self.epochs - 1)
            out.append((s0 * (s1 / s0) ** f, self.learning_rate + (self.learning_rate_final - self.learning_rate) * f))
        return out

    def fit(self, x: torch.Tensor | np.ndarray | PatchFile | PatchMemory,
            init: torch.Tensor | np.ndarray | None = None,
            prior_bmu: torch.Tensor | np.ndarray | None = None,
            progress: Callable[[int, int], None] | None = None,
            on_epoch: Callable[[int, torch.Tensor], None] | None = None) -> "SOM":
        """Train on ``x``.

        Args:
            x: float32 ``(N, d)`` training vectors, or a :mod:`somad.patches` source that streams
                them in chunks (the ``torch`` backend then holds one chunk at a time; results equal
                the in-memory ones within float rounding).
            init: float32 ``(H*W, d)`` initial weights (e.g. the positional mean); default: random samples.
            prior_bmu: int ``(N,)`` neuron expected to be near each sample's BMU (its grid position);
                it seeds the local search of the first epoch.
            progress: called as ``progress(epoch, epochs)`` after every epoch.
            on_epoch: called as ``on_epoch(epoch, weights)`` after every epoch's update, with the
                1-based epoch and the current float32 ``(H*W, d)`` weights in somad's neuron order (read
                them, do not keep or change them: the next epoch updates them in place); e.g. a
                :class:`somad.replay.ReplayRecorder`.

        Returns:
            self
        """
        self._validate()
        dev = torch.device(self.device)
        source = _as_source(x, dev)
        if init is None:
            g = torch.Generator().manual_seed(self.seed)
            init = source.take(torch.randint(source.n_rows, (self.n_neurons,), generator=g).numpy())
        init = torch.as_tensor(init, dtype=torch.float32, device=dev).reshape(self.n_neurons, -1)
        if init.shape[1] != source.dim:
            raise ValueError(f"init has {init.shape[1]} features but x has {source.dim}.")
        data = source if self.backend == "torch" else source.tensor()
        self.weights_ = SOM_BACKENDS[self.backend](self, data, init.clone(), prior_bmu, progress, on_epoch)
        self._final_bmus(source)
        return self

    def _final_bmus(self, source) -> None:
        """Exact BMU, its distance, the quantization and topographic errors, one chunk at a time."""
        self.bmu_, self.bmu_dist_, self.quantization_error_, self.topographic_error_ = exact_quality(
            source, self.weights_, self.shape, self.topology)

    def _grid_d2(self, device: torch.device) -> torch.Tensor:
        xy = torch.as_tensor(grid_coordinates(self.shape, self.topology), dtype=torch.float32, device=device)
        return torch.cdist(xy, xy).pow_(2)

    def quantization_error(self, x: torch.Tensor) -> float:
        """Mean Euclidean distance of ``x`` ``(N, d)`` to its BMU (feature units)."""
        return float(exact_bmu(torch.as_tensor(x, dtype=torch.float32), self.weights_.cpu())[1].mean())


def _train_torch(som: SOM, x, w: torch.Tensor, prior_bmu, progress, on_epoch=None) -> torch.Tensor:
    """Batch SOM epochs over a chunked source ``x``: per-neuron sums accumulate chunk by chunk
    (``index_add_`` into one accumulator, the same additions in the same order as one pass)."""
    dev = w.device
    d2 = som._grid_d2(dev) if som.topology != "rectangular" else None
    local = None
    prev = None
    if som.search_radius is not None and som.search_radius < max(som.shape):
        local = _TileSearch(som.shape, tile=SEARCH_TILE, radius=som.search_radius, device=dev)
        if prior_bmu is not None:
            prev = torch.as_tensor(prior_bmu, dtype=torch.long, device=dev)
    bmu = torch.empty(x.n_rows, dtype=torch.long, device=dev)
    for epoch, (sigma, lr) in enumerate(som.schedule()):
        sums = torch.zeros_like(w)
        counts = torch.zeros(som.n_neurons, dtype=torch.long, device=dev)
        for start, xc in x.chunks():
            rows = slice(start, start + len(xc))
            # reading prev[rows] before writing bmu[rows] lets bmu be prev of the next epoch in place
            b = local(xc, w, prev[rows]) if local is not None and prev is not None else exact_bmu(xc, w)[0][:, 0]
            bmu[rows] = b
            sums.index_add_(0, b, xc)
            counts += torch.bincount(b, minlength=som.n_neurons)
        prev = bmu
        counts = counts.to(w.dtype)
        num, den = _neighbourhood_sums(som, sums, counts, sigma, d2)
        ok = den > 1e-12 * max(1.0, float(counts.sum()))
        w[ok] = (1 - lr) * w[ok] + lr * (num[ok] / den[ok, None])
        if on_epoch:
            on_epoch(epoch + 1, w)
        if progress:
            progress(epoch + 1, som.epochs)
    return w


def _as_source(x, device: torch.device):
    """A chunked patch source for ``x`` (a tensor/array is wrapped as one in-memory chunk)."""
    if hasattr(x, "chunks"):
        if x.n_rows == 0:
            raise ValueError("SOM.fit needs at least one training vector, got an empty patch source.")
        return x
    x = torch.as_tensor(x, dtype=torch.float32, device=device)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"SOM.fit needs a non-empty (N, d) array, got shape {tuple(x.shape)}.")
    return PatchMemory(x)


def _neighbourhood_sums(som: SOM, sums: torch.Tensor, counts: torch.Tensor, sigma: float,
                        d2: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(h @ sums, h @ counts)`` with ``h[j, b] = exp(-|r_j - r_b|^2 / (2 sigma^2))``.

    On a rectangular grid the Gaussian is separable, ``h = h_rows (x) h_cols``, so the
    (M x M) product becomes two small products along rows and columns: O(M (H + W) d)
    instead of O(M^2 d), and no (M x M) kernel is built. Hexagonal grids use the dense kernel ``d2``.
    """
    if d2 is not None:
        h = torch.exp(d2 / (-2.0 * sigma * sigma))
        return h @ sums, h @ counts
    hh, ww = som.shape
    dev, dt = sums.device, sums.dtype
    r = torch.arange(hh, device=dev, dtype=dt)
    c = torch.arange(ww, device=dev, dtype=dt)
    hr = torch.exp((r[:, None] - r[None, :]) ** 2 / (-2.0 * sigma * sigma))
    hc = torch.exp((c[:, None] - c[None, :]) ** 2 / (-2.0 * sigma * sigma))
    both = torch.cat([sums, counts[:, None]], 1).reshape(hh, ww, -1)
    out = torch.einsum("ab,bcf->acf", hr, both)
    out = torch.einsum("cd,adf->acf", hc, out).reshape(hh * ww, -1)
    return out[:, :-1].contiguous(), out[:, -1].contiguous()


def _train_minisom(som: SOM, x: torch.Tensor, w: torch.Tensor, prior_bmu, progress, on_epoch=None) -> torch.Tensor:
    """MiniSom's batch update (``train_batch_offline``), one call per epoch of ``som.schedule()``.

    MiniSom decays sigma and the learning rate by its own function of ``t / num_iteration``
    and accepts no callable for sigma, so each epoch gets a fresh ``MiniSom`` built with that
    epoch's ``(sigma_t, lr_t)`` and trains for one iteration: at ``t = 0`` every MiniSom decay
    function returns its input, so ``sigma_final`` and ``learning_rate_final`` are honoured and
    nothing decays on top. The codebook travels between epochs through ``get_weights()``
    (see ``_set_codebook``) in MiniSom's neuron order (``_minisom_lattice``). ``prior_bmu`` is
    unused: MiniSom searches every neuron.
    """
    order = _minisom_lattice(som.shape, som.topology)
    data = x.cpu().numpy().astype(np.float64)
    codebook = w.cpu().numpy().astype(np.float64)[order]
    for epoch, (sigma, lr) in enumerate(som.schedule()):
        ms = _new_minisom(som.shape, som.topology, data.shape[1], sigma, lr)
        _set_codebook(ms, codebook)
        ms.train_batch_offline(data, 1)
        codebook = ms.get_weights()
        if on_epoch:
            on_epoch(epoch + 1, _from_minisom(codebook, order, x.device))
        if progress:
            progress(epoch + 1, som.epochs)
    return _from_minisom(codebook, order, x.device)


def _from_minisom(codebook: np.ndarray, order: np.ndarray, device) -> torch.Tensor:
    """MiniSom's codebook ``(W, H, d)`` as somad's float32 ``(H*W, d)`` weights (see ``_minisom_lattice``)."""
    out = np.empty((order.size, codebook.shape[-1]), dtype=np.float64)
    out[order.ravel()] = codebook.reshape(order.size, -1)
    return torch.as_tensor(out, dtype=torch.float32, device=device)


def _minisom_lattice(shape: tuple[int, int], topology: str) -> np.ndarray:
    """somad index of each neuron of ``MiniSom(W, H)``: int64 ``(W, H)``; both are then one lattice.

    MiniSom 2.3.6 (``get_euclidean_coordinates``) places neuron ``(i, j)`` of ``MiniSom(x, y)``
    at ``(i - 0.5 [j = y-1 mod 2], j sqrt(3)/2)`` on a hexagonal grid: its *first* index runs
    along a row, and the rows of ``y - 1``'s parity are shifted left. somad places ``(r, c)`` at
    ``(c + 0.5 [r odd], r sqrt(3)/2)``. So ``MiniSom(W, H)`` with ``i = c, j = r`` is somad's
    lattice moved by half a cell when ``H`` is odd, and mirrored (``i = W - 1 - c``) when ``H``
    is even: every neuron distance, hence the neighbourhood, is the same. Rectangular grids only
    need the transposition.
    """
    h, w = shape
    cols = np.arange(w)
    if topology == "hexagonal" and h % 2 == 0:
        cols = cols[::-1]
    return np.arange(h)[None, :] * w + cols[:, None]


def _new_minisom(shape: tuple[int, int], topology: str, n_features: int, sigma: float, learning_rate: float):
    """``MiniSom(W, H)`` with a Gaussian neighbourhood, in the orientation of ``_minisom_lattice``."""
    from minisom import MiniSom

    h, w = shape
    return MiniSom(w, h, n_features, sigma=sigma, learning_rate=learning_rate,
                   neighborhood_function="gaussian", topology=topology)


def _set_codebook(ms, codebook: np.ndarray) -> None:
    """Write ``codebook`` float64 ``(W, H, d)`` into MiniSom ``ms`` through its public ``get_weights()``.

    MiniSom has no weight setter; ``get_weights()`` returns its live codebook, and its maintainer's
    advice is to overwrite that content (JustGlowing/minisom issue #126). This writes in place rather
    than assigning the private ``_weights``.

    Raises:
        RuntimeError: the installed MiniSom returns a copy, so the initial weights would be ignored.
    """
    live = ms.get_weights()
    live[...] = codebook
    if not np.shares_memory(ms.get_weights(), live):
        raise RuntimeError("this MiniSom version's get_weights() returns a copy, so the minisom backend cannot "
                           "set its initial weights; install MiniSom 2.3.6 or use backend 'torch'.")


SOM_BACKENDS: dict[str, Callable] = {"torch": _train_torch, "minisom": _train_minisom}


def topographic_error(top2: torch.Tensor, shape: tuple[int, int], topology: str = "rectangular") -> float:
    """Fraction of vectors whose best and second-best neurons are not grid neighbours.

    Args:
        top2: int64 ``(N, 2)`` two nearest neurons of each vector.
    """
    xy = torch.as_tensor(grid_coordinates(shape, topology), dtype=torch.float32, device=top2.device)
    gap = (xy[top2[:, 0]] - xy[top2[:, 1]]).norm(dim=1)
    return float((gap > _neighbour_limit(topology)).float().mean())


def u_matrix(weights: np.ndarray | torch.Tensor, shape: tuple[int, int], topology: str = "rectangular",
             pairs: np.ndarray | None = None) -> np.ndarray:
    """Unified distance matrix: mean Euclidean distance of each neuron to its grid neighbours.

    Args:
        weights: ``(H*W, d)`` neuron weights.
        pairs: :func:`neighbour_pairs` of the grid, when the caller keeps them (e.g. once per epoch).

    Returns:
        float32 ``(H, W)``: high values mark borders between clusters of the map.
    """
    w = torch.as_tensor(weights, dtype=torch.float32).cpu()
    pairs = torch.as_tensor(neighbour_pairs(shape, topology) if pairs is None else pairs)
    dist = (w[pairs[:, 0]] - w[pairs[:, 1]]).norm(dim=1)
    total = torch.zeros(len(w)).index_add_(0, pairs[:, 0], dist).index_add_(0, pairs[:, 1], dist)
    count = torch.bincount(pairs.flatten(), minlength=len(w)).clamp_min(1)
    return (total / count).reshape(shape).numpy()


def hit_map(bmu: np.ndarray | torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """Number of training vectors won by each neuron: int64 ``(H, W)``."""
    b = torch.as_tensor(bmu).cpu().long()
    return torch.bincount(b, minlength=shape[0] * shape[1]).reshape(shape).numpy()
