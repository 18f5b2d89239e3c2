"""Batched work on variable-length runs of rows ("segments"), without a Python loop per run.

Rows sorted by a key (a neuron) form one run per key. Runs are cut into segments of at most
``max_len`` rows, segments are padded (:data:`PAD_GRANULE`), and all segments of one padded
length are processed by one batched product (``torch.bmm``) in blocks of bounded memory. Used
for the per-neuron Gram matrices (:mod:`somad.gaussian`) and the grouped Mahalanobis distances
(:mod:`somad.scoring`).
"""
from __future__ import annotations

from typing import Iterator

import torch

BLOCK_BYTES = 64 << 20
"""Memory of one batched product: big enough that ``bmm`` work dwarfs the Python loop over
blocks, small enough to be negligible next to the model and the images (64 MB)."""


PAD_GRANULE = 16
"""Segments of up to this many rows are padded to the next power of two, longer ones to the next
multiple of it (16 floats are one AVX-512 register): a segment of 65 rows costs 80 padded rows, not 128."""


def split_runs(counts: torch.Tensor, max_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut each key's run of sorted rows into segments of at most ``max_len`` rows.

    Args:
        counts: int64 ``(M,)`` rows per key, in sorted order.

    Returns:
        ``(key, start, length)`` int64 ``(S,)`` per segment; ``start`` indexes the sorted rows.
    """
    counts = counts.long()
    ends = torch.cumsum(counts, 0)
    starts = ends - counts
    nseg = (counts + max_len - 1) // max_len
    key = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), nseg)
    first = torch.repeat_interleave(torch.cumsum(nseg, 0) - nseg, nseg)
    i = torch.arange(len(key), device=counts.device) - first
    start = starts[key] + i * max_len
    length = torch.minimum(ends[key] - start, torch.full_like(start, max_len))
    return key, start, length


def padded_blocks(counts: torch.Tensor, max_len: int, row_bytes: int, segment_bytes: int,
                  block_bytes: int = BLOCK_BYTES) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Blocks of equally padded segments, for one ``bmm`` each.

    Args:
        counts: int64 ``(M,)`` rows per key, in sorted order.
        max_len: longest segment.
        row_bytes: bytes one padded row costs in the caller's product.
        segment_bytes: bytes one segment costs besides its rows (e.g. a gathered d x d matrix).
        block_bytes: memory bound of one block.

    Yields:
        ``(key (S,), pos (S, b), valid (S, b))``: the key of each segment, the sorted-row index of
        each padded slot (padding repeats the segment's last row) and which slots are real rows.
    """
    key, start, length = split_runs(counts, max_len)
    keep = length > 0
    key, start, length = key[keep], start[keep], length[keep]
    padded = torch.where(length <= PAD_GRANULE, torch.pow(2, torch.ceil(torch.log2(length.double())).long()),
                         (length + PAD_GRANULE - 1) // PAD_GRANULE * PAD_GRANULE)
    for b in torch.unique(padded).tolist():
        sel = torch.nonzero(padded == b).squeeze(1)
        per = max(1, block_bytes // max(1, b * row_bytes + segment_bytes))
        ar = torch.arange(b, device=counts.device)
        for s in range(0, len(sel), per):
            seg = sel[s:s + per]
            st, ln = start[seg], length[seg]
            pos = st[:, None] + torch.minimum(ar[None, :], ln[:, None] - 1)
            yield key[seg], pos, ar[None, :] < ln[:, None]
