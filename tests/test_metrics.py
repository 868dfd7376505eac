"""Metrics with known answers."""

from __future__ import annotations

import torch

from triplanenet.eval.metrics import depth_error, identity_similarity, ms_ssim, mse


def test_mse_known_values() -> None:
    a = torch.zeros(2, 3, 4, 4)
    b = torch.full((2, 3, 4, 4), 0.5)
    b[1] = 1.0
    torch.testing.assert_close(mse(a, b), torch.tensor([0.25, 1.0]))


def test_ms_ssim_identical_shifted_and_scale_handling() -> None:
    generator = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 200, 200, generator=generator) * 2 - 1, 5, 1, 2)
    assert ms_ssim(smooth, smooth).item() == 1.0
    shifted = torch.roll(smooth, shifts=4, dims=3)
    value = ms_ssim(smooth, shifted).item()
    assert 0.0 < value < 0.99
    assert ms_ssim(smooth, torch.roll(smooth, 1, 3)).item() > value  # a smaller shift is more similar
    small = smooth[..., :64, :64]  # fewer scales fit; still 1 for identical images
    assert ms_ssim(small, small).item() == 1.0


def test_depth_error_only_counts_foreground() -> None:
    depth = torch.full((1, 1, 8, 8), 2.5)
    target = torch.full((1, 1, 8, 8), 2.6)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1
    target[mask == 0] = 3.3
    torch.testing.assert_close(depth_error(depth, target, mask), torch.tensor([0.1]))
    # A 16² target is area-resized onto the 8² prediction; mixed border pixels are excluded.
    big_target = torch.nn.functional.interpolate(target, scale_factor=2.0, mode="nearest")
    big_mask = torch.nn.functional.interpolate(mask, scale_factor=2.0, mode="nearest")
    torch.testing.assert_close(depth_error(depth, big_target, big_mask), torch.tensor([0.1]))


def test_identity_similarity_is_cosine() -> None:
    embed = lambda x: torch.nn.functional.normalize(x.flatten(1), dim=1)  # noqa: E731
    x = torch.randn(3, 3, 2, 2)
    torch.testing.assert_close(identity_similarity(embed, x, x), torch.ones(3))
    torch.testing.assert_close(identity_similarity(embed, x, -x), -torch.ones(3))
