"""Image and geometry metrics (differentiable where it makes sense). Images are (B, 3, H, W) in [-1, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error on [-1, 1] values (the official TriPlaneNet metric), shape (B,)."""
    return (a - b).square().flatten(1).mean(dim=1)


def _gaussian_window(size: int = 11, sigma: float = 1.5, channels: int = 3) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g).expand(channels, 1, size, size).contiguous()


def _ssim_parts(x: torch.Tensor, y: torch.Tensor, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(SSIM, contrast-structure) per image for images in [0, 1] (data range 1), valid-region filtering."""
    c1, c2 = 0.01**2, 0.03**2
    channels = x.shape[1]
    mu_x = F.conv2d(x, window, groups=channels)
    mu_y = F.conv2d(y, window, groups=channels)
    sigma_x = F.conv2d(x * x, window, groups=channels) - mu_x**2
    sigma_y = F.conv2d(y * y, window, groups=channels) - mu_y**2
    sigma_xy = F.conv2d(x * y, window, groups=channels) - mu_x * mu_y
    cs = (2 * sigma_xy + c2) / (sigma_x + sigma_y + c2)
    ssim = ((2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)) * cs
    return ssim.flatten(1).mean(dim=1), cs.flatten(1).mean(dim=1)


def ms_ssim(a: torch.Tensor, b: torch.Tensor, window_size: int = 11) -> torch.Tensor:
    """Multi-scale SSIM (Wang et al. 2003) per image, images mapped to [0, 1] (as the official metric does).

    Uses the standard five scales and weights when the image is large enough (> 160 px for an 11-px window);
    smaller images use as many scales as fit, with the weights of those scales renormalised to sum to 1.
    Returns (B,).
    """
    x = (a.float().clamp(-1, 1) + 1) / 2
    y = (b.float().clamp(-1, 1) + 1) / 2
    window = _gaussian_window(window_size, 1.5, x.shape[1]).to(x.device)
    scales = 1
    while scales < len(MS_SSIM_WEIGHTS) and min(x.shape[-2:]) // 2**scales >= window_size:
        scales += 1
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], device=x.device)
    weights = weights / weights.sum()
    values = []
    for scale in range(scales):
        ssim, cs = _ssim_parts(x, y, window)
        values.append((ssim if scale == scales - 1 else cs).clamp_min(1e-6))
        if scale < scales - 1:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    stacked = torch.stack(values, dim=1)  # (B, scales)
    return torch.prod(stacked ** weights[None], dim=1)


def depth_error(depth: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute depth difference over foreground pixels, per image (B,); inputs (B, 1, h, w), target resized
    (area) to the prediction's size and compared only where the resized mask is fully foreground."""
    size = depth.shape[-2:]
    if target.shape[-2:] != size:
        weight = F.adaptive_avg_pool2d(mask, size)
        target = F.adaptive_avg_pool2d(target * mask, size) / weight.clamp_min(1e-6)
        mask = (weight > 0.999).float()
    diff = (depth - target).abs() * mask
    return diff.flatten(1).sum(dim=1) / mask.flatten(1).sum(dim=1).clamp_min(1)


def identity_similarity(embed, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity (B,) of face embeddings; ``embed`` maps images to L2-normalised (B, D) vectors."""
    return (embed(a) * embed(b)).sum(dim=1)
