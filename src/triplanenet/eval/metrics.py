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
    """(SSIM, contrast-structure) per image and channel, (B, C) each, for images in [0, 1] (data range 1), valid-region
    filtering."""
    c1, c2 = 0.01**2, 0.03**2
    channels = x.shape[1]
    mu_x = F.conv2d(x, window, groups=channels)
    mu_y = F.conv2d(y, window, groups=channels)
    sigma_x = F.conv2d(x * x, window, groups=channels) - mu_x**2
    sigma_y = F.conv2d(y * y, window, groups=channels) - mu_y**2
    sigma_xy = F.conv2d(x * y, window, groups=channels) - mu_x * mu_y
    cs = (2 * sigma_xy + c2) / (sigma_x + sigma_y + c2)
    ssim = ((2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)) * cs
    return ssim.flatten(2).mean(dim=2), cs.flatten(2).mean(dim=2)


def ms_ssim(a: torch.Tensor, b: torch.Tensor, window_size: int = 11) -> torch.Tensor:
    """Multi-scale SSIM (Wang et al. 2003) per image, images mapped to [0, 1]: the metric TriPlaneNet reports.

    Conventions (those of ``pytorch_msssim.ms_ssim(X, Y, data_range=1)``, which the official evaluation calls, and
    which ``tests/test_metric_references.py`` compares against within 1e-5): Gaussian window 11 px, sigma 1.5, valid
    filtering, K = (0.01, 0.03); five scales with weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333); 2x2 average
    pooling between scales, zero-padding an odd side by one; negative contrast-structure / SSIM terms clamped to 0;
    MS-SSIM is formed for each colour channel and then averaged over the channels.

    Five scales need a smaller side of more than 160 px (for an 11-px window). Smaller images, which the official
    metric rejects, use as many scales as fit, with the weights of those scales renormalised to sum to 1.
    Returns (B,).
    """
    x = (a.float().clamp(-1, 1) + 1) / 2
    y = (b.float().clamp(-1, 1) + 1) / 2
    window = _gaussian_window(window_size, 1.5, x.shape[1]).to(x.device)
    scales = 1  # add a scale while its (ceil-halved) smaller side still holds the window
    while scales < len(MS_SSIM_WEIGHTS) and -(-min(x.shape[-2:]) // 2**scales) >= window_size:
        scales += 1
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], device=x.device)
    if scales < len(MS_SSIM_WEIGHTS):  # the five published weights are used as they are (they sum to 1.0001)
        weights = weights / weights.sum()
    terms = []
    for scale in range(scales):
        ssim, cs = _ssim_parts(x, y, window)
        terms.append((ssim if scale == scales - 1 else cs).clamp_min(0.0))
        if scale < scales - 1:
            odd = (x.shape[-2] % 2, x.shape[-1] % 2)
            x, y = F.avg_pool2d(x, 2, padding=odd), F.avg_pool2d(y, 2, padding=odd)
    per_channel = torch.prod(torch.stack(terms, dim=0) ** weights[:, None, None], dim=0)  # (B, C)
    return per_channel.mean(dim=1)


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
