"""Cell geometry and the resampling that undoes a backbone's response offsets (somad.geometry)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from somad import geometry


@pytest.mark.parametrize("h, w, stride", [(28, 35, 8), (14, 9, 16), (7, 7, 16)])
def test_zero_offset_is_bilinear_upsampling(h, w, stride):
    f = torch.randn(2, 3, h, w)
    size = (h * stride // 4, w * stride // 4)
    ry = geometry.resample_matrix(size[0], h, stride, 4)
    rx = geometry.resample_matrix(size[1], w, stride, 4)
    want = F.interpolate(f, size=size, mode="bilinear", align_corners=False)
    torch.testing.assert_close(torch.matmul(torch.matmul(ry, f), rx.t()), want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("offset", [-1.8, 0.4, 5.0])
def test_offset_reads_the_map_that_many_pixels_away(offset):
    """A stride-16 map whose cells hold their own pixel centre, read at the stride-4 centres: each
    output cell gets its centre plus the offset (exact for a linear map), clamped at the borders."""
    n_in, n_out = 14, 56
    f = torch.from_numpy(geometry.cell_centres(n_in, 16)).float()
    got = geometry.resample_matrix(n_out, n_in, 16, 4, offset) @ f
    want = np.clip(geometry.cell_centres(n_out, 4) + offset, 7.5, 16 * (n_in - 1) + 7.5)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-4)
    assert np.allclose(geometry.resample_matrix(n_out, n_in, 16, 4, offset).sum(1).numpy(), 1)


def test_every_phase_covers_each_position_within_a_cell_once():
    centres = geometry.every_phase(224, period=16, step=2)
    phases = {(cy % 16, cx % 16) for cy, cx in centres}
    assert len(centres) == len(phases) == 64
    imgs = geometry.dot_images(224, centres[:1])
    ys, xs = np.nonzero(imgs[1, :, :, 0] == 255)
    assert (ys.mean(), xs.mean()) == centres[0] and np.ptp(ys) + 1 == geometry.DOT_SIDE
