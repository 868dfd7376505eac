"""EG3D's two-pass importance volume renderer, as pure functions plus a thin parameter-free module.

Per ray (unit direction ``d``, origin ``o``):

1. **Coarse pass.** ``D`` stratified depths in ``[ray_start, ray_end]`` (one per bin, jittered uniformly
   inside the bin, or at its middle in deterministic mode); points ``o + t d`` are decoded from the planes.
2. **Importance pass.** The coarse compositing weights are smoothed into a piecewise-constant PDF over the bin
   midpoints and ``N`` new depths are drawn by inverse-CDF sampling (random ``u``, or ``linspace(0, 1)``).
3. **Compositing.** Coarse and fine samples are merged, sorted by depth and composited with EG3D's
   ``MipRayMarcher2`` (quantities averaged over each interval, density ``softplus(sigma - 1)``).

With ``depth_resolution_importance == 0`` only the coarse samples are composited.

Every formula here reproduces the official implementation numerically, including its quirks (the last
stratified sample lies half a bin past ``ray_end``; the depth is clamped to the min/max of *all* sample depths
in the batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from triplanenet.eg3d.config import RenderingConfig
from triplanenet.eg3d.triplane import OSGDecoder, sample_mean_from_planes
from triplanenet.errors import ConfigError

DEFAULT_MAX_POINTS_PER_CHUNK = 1 << 18
"""Decoded points per chunk on the CPU (larger ray batches are split): peak memory well under 1 GB for FFHQ, and
faster than larger chunks there (FFHQ render at 48+48 samples: 2.0 s with 2^18, 2.8 s with 2^22 on 2 threads)."""

DEFAULT_MAX_POINTS_PER_CHUNK_CUDA = 1 << 22
"""Decoded points per chunk on CUDA: one chunk for a batch-1 FFHQ render at 96+96 samples (16 384 rays × 192 =
3.1 M points), as the official renderer does it, while batch 32 is split into about 13 chunks instead of needing all
50 M points at once. Small chunks would cost a GPU dozens of sequential kernel launches per chunk (batch 32 with
2^18 points would be 390 chunks per render)."""


def default_points_per_chunk(device: torch.device) -> int:
    """The chunk size :class:`ImportanceRenderer` uses when none was given: per device type."""
    return DEFAULT_MAX_POINTS_PER_CHUNK_CUDA if device.type == "cuda" else DEFAULT_MAX_POINTS_PER_CHUNK


TRANSMITTANCE_EPS = 1e-10
PDF_EPS = 1e-5
WEIGHT_SMOOTHING_FLOOR = 0.01


@dataclass
class RenderOutput:
    """Result of :class:`ImportanceRenderer`."""

    features: torch.Tensor
    """(B, M, C) composited decoder features scaled to [-1, 1] (the first three channels are RGB)."""
    depth: torch.Tensor
    """(B, M, 1) expected distance along the unit ray, clamped to the range of all sample depths."""
    weight_sum: torch.Tensor
    """(B, M, 1) accumulated opacity (sum of compositing weights) in [0, 1]."""


@dataclass
class MarchOutput:
    """Result of :func:`ray_march` for S samples per ray."""

    features: torch.Tensor
    """(B, M, C) composited features, scaled to [-1, 1] when the inputs lie in [0, 1]."""
    depth: torch.Tensor
    """(B, M, 1) weight-averaged interval-midpoint depth (clamped unless asked otherwise)."""
    weights: torch.Tensor
    """(B, M, S-1, 1) compositing weight of each interval."""
    weight_sum: torch.Tensor
    """(B, M, 1) sum of ``weights``."""


# ------------------------------------------------------------------------------------------------------------
# Random numbers


def _uniform(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """U[0, 1) drawn from ``generator`` (on the generator's device) and moved to ``device``."""
    source = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=source, dtype=dtype).to(device)


def _normal(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """N(0, 1) drawn from ``generator`` (on the generator's device) and moved to ``device``."""
    source = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=source, dtype=dtype).to(device)


# ------------------------------------------------------------------------------------------------------------
# Stratified (coarse) depths


def stratified_depths(
    jitter: torch.Tensor, ray_start: float, ray_end: float, disparity_space_sampling: bool = False
) -> torch.Tensor:
    """Coarse sample depths from per-sample jitter fractions.

    Depth sampling (``disparity_space_sampling=False``), with ``delta = (end - start) / (D - 1)``::

        t_k = linspace(start, end, D)[k] + jitter_k * delta

    Disparity sampling: ``s_k = (k + jitter_k) / (D - 1)`` and ``t_k = 1 / ((1 - s_k) / start + s_k / end)``.

    Args:
        jitter: (B, M, D, 1) fractions of a bin in [0, 1); 0.5 everywhere gives EG3D's deterministic mode.
        ray_start: near bound (> 0 for disparity sampling).
        ray_end: far bound.
        disparity_space_sampling: space the samples linearly in inverse depth.

    Returns:
        (B, M, D, 1) depths, increasing along dim 2 (the last one lies past ``ray_end`` unless jitter is 0).
    """
    num_samples = jitter.shape[-2]
    if num_samples < 2:
        raise ValueError(f"need at least 2 samples per ray, got {num_samples}")
    shape = (1, 1, num_samples, 1)
    if disparity_space_sampling:
        fractions = torch.linspace(0.0, 1.0, num_samples, device=jitter.device, dtype=jitter.dtype).reshape(shape)
        fractions = fractions + jitter * (1.0 / (num_samples - 1))
        return 1.0 / (1.0 / ray_start * (1.0 - fractions) + 1.0 / ray_end * fractions)
    depths = torch.linspace(ray_start, ray_end, num_samples, device=jitter.device, dtype=jitter.dtype).reshape(shape)
    return depths + jitter * ((ray_end - ray_start) / (num_samples - 1))


def sample_stratified(
    batch_size: int,
    num_rays: int,
    ray_start: float,
    ray_end: float,
    depth_resolution: int,
    *,
    disparity_space_sampling: bool = False,
    deterministic: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Stratified coarse depths (B, M, D, 1): uniform jitter inside each bin, or bin middles if deterministic.

    See :func:`stratified_depths` for the formula.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    shape = (batch_size, num_rays, depth_resolution, 1)
    if deterministic:
        jitter = torch.full(shape, 0.5, device=device, dtype=dtype)
    else:
        jitter = _uniform(shape, generator, device, dtype)
    return stratified_depths(jitter, ray_start, ray_end, disparity_space_sampling)


# ------------------------------------------------------------------------------------------------------------
# Ray marcher (MipRayMarcher2)


EMPTY_RAY_WEIGHT = 1e-20
"""Rays whose accumulated weight is at most this count as empty (depth -> far bound)."""


def compute_weights(densities: torch.Tensor, depths: torch.Tensor) -> torch.Tensor:
    """Compositing weights of the S-1 intervals between consecutive samples.

    ``s_i = softplus((sigma_i + sigma_{i+1}) / 2 - 1)``, ``alpha_i = 1 - exp(-s_i * (t_{i+1} - t_i))``,
    ``T_i = prod_{j<i} (1 - alpha_j + 1e-10)``, ``w_i = alpha_i * T_i``.

    Args:
        densities: (B, M, S, 1) raw densities.
        depths: (B, M, S, 1) sample depths, sorted along dim 2.

    Returns:
        (B, M, S-1, 1) weights in [0, 1].
    """
    deltas = depths[:, :, 1:] - depths[:, :, :-1]
    densities_mid = (densities[:, :, :-1] + densities[:, :, 1:]) / 2
    densities_mid = F.softplus(densities_mid - 1)  # σ is shifted by -1 before the softplus, as EG3D does
    alpha = 1 - torch.exp(-(densities_mid * deltas))
    # Exclusive cumulative product: transmittance before each interval (the 1e-10 keeps it from reaching 0).
    ones = torch.ones_like(alpha[:, :, :1])
    transmittance = torch.cumprod(torch.cat([ones, 1 - alpha + TRANSMITTANCE_EPS], dim=-2), dim=-2)[:, :, :-1]
    return alpha * transmittance


def ray_march(
    colors: torch.Tensor,
    densities: torch.Tensor,
    depths: torch.Tensor,
    white_back: bool = False,
    clamp_depth: bool = True,
) -> MarchOutput:
    """Composite samples along each ray (EG3D's ``MipRayMarcher2``).

    Colours and depths are averaged over each interval; ``features = 2 * sum_i w_i c_i - 1`` (after adding
    ``1 - sum w`` for a white background); ``depth = sum_i w_i t_i / sum_i w_i``, NaN (no weight) -> +inf,
    then clamped to ``[min(depths), max(depths)]`` taken over the **whole** ``depths`` tensor, batch included.

    Args:
        colors: (B, M, S, C) features, normally in [0, 1].
        densities: (B, M, S, 1) raw densities.
        depths: (B, M, S, 1) sorted sample depths.
        white_back: composite onto white.
        clamp_depth: apply the final clamp; ``False`` returns the unclamped depth (NaN already replaced by
            +inf), for callers that clamp later with bounds taken over a larger batch.

    Returns:
        :class:`MarchOutput`: features (B, M, C), depth (B, M, 1), weights (B, M, S-1, 1) and
        weight_sum (B, M, 1).
    """
    weights = compute_weights(densities, depths)
    colors_mid = (colors[:, :, :-1] + colors[:, :, 1:]) / 2
    depths_mid = (depths[:, :, :-1] + depths[:, :, 1:]) / 2
    features = torch.sum(weights * colors_mid, dim=-2)
    weight_sum = weights.sum(dim=2)
    # Same values as EG3D's sum / total -> nan_to_num(inf) for every ray with weight, but rays with (almost) no
    # weight take the +inf branch without ever dividing by zero, so the gradient stays finite when depth is trained.
    has_weight = weight_sum > EMPTY_RAY_WEIGHT
    depth = torch.where(
        has_weight,
        torch.sum(weights * depths_mid, dim=-2) / weight_sum.clamp_min(EMPTY_RAY_WEIGHT),
        torch.full_like(weight_sum, float("inf")),
    )
    if clamp_depth:
        depth = torch.clamp(depth, depths.min(), depths.max())
    if white_back:
        features = features + 1 - weight_sum
    features = features * 2 - 1
    return MarchOutput(features=features, depth=depth, weights=weights, weight_sum=weight_sum)


# ------------------------------------------------------------------------------------------------------------
# Importance sampling


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, u: torch.Tensor, eps: float = PDF_EPS) -> torch.Tensor:
    """Inverse-CDF sampling of a piecewise-linear CDF (NeRF's ``sample_pdf``).

    ``pdf = (w + eps) / sum(w + eps)``, ``cdf = [0, cumsum(pdf)]``; for each ``u``, ``i = searchsorted(cdf, u,
    right=True)``, ``lo = max(i - 1, 0)``, ``hi = min(i, K)`` and the sample is ``bins[lo] + (u - cdf[lo]) /
    den * (bins[hi] - bins[lo])`` with ``den = cdf[hi] - cdf[lo]`` (1 where it is below ``eps``).

    Args:
        bins: (R, K+1) bin edges, sorted (only the first K+1 columns are reachable if more are given).
        weights: (R, K) non-negative bin weights.
        u: (R, S) quantiles in [0, 1].
        eps: added to the weights and used as the degenerate-bin threshold.

    Returns:
        (R, S) samples within ``[bins[:, 0], bins[:, K]]``.
    """
    last_bin = weights.shape[-1]
    padded = weights + eps
    running = torch.cumsum(padded / torch.sum(padded, dim=-1, keepdim=True), dim=-1)
    cdf = torch.cat([torch.zeros_like(running[:, :1]), running], dim=-1)  # (R, K+1), from 0 to 1
    # Each quantile falls in the CDF step [cdf[lo], cdf[hi]] and is mapped linearly onto [bins[lo], bins[hi]].
    step = torch.searchsorted(cdf, u.contiguous(), right=True)
    lo = (step - 1).clamp_min(0)
    hi = step.clamp_max(last_bin)
    cdf_lo, cdf_hi = cdf.gather(1, lo), cdf.gather(1, hi)
    edge_lo, edge_hi = bins.gather(1, lo), bins.gather(1, hi)
    rise = cdf_hi - cdf_lo
    # A step that rises by less than eps carries no probability mass worth interpolating; 1 keeps the division finite.
    rise = torch.where(rise < eps, torch.ones_like(rise), rise)
    return edge_lo + (u - cdf_lo) / rise * (edge_hi - edge_lo)


@torch.no_grad()
def sample_importance(
    depths: torch.Tensor,
    weights: torch.Tensor,
    num_importance: int,
    *,
    deterministic: bool = False,
    generator: torch.Generator | None = None,
    u: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fine depths drawn from the coarse compositing weights (no gradient).

    The D-1 weights are smoothed (``max_pool1d(k=2, s=1, pad=1)`` then ``avg_pool1d(k=2, s=1)``, plus 0.01);
    the bins are the D-1 midpoints of the coarse depths and the PDF uses the inner D-3 smoothed weights, so
    samples fall between the first and the second-to-last midpoint.

    Args:
        depths: (B, M, D, 1) sorted coarse depths, D >= 4.
        weights: (B, M, D-1, 1) coarse weights from :func:`compute_weights`.
        num_importance: N, samples to draw per ray.
        deterministic: use ``u = linspace(0, 1, N)`` for every ray instead of random quantiles.
        generator: source of the random quantiles.
        u: (B, M, N) explicit quantiles in [0, 1]; overrides ``deterministic`` and ``generator``.

    Returns:
        (B, M, N, 1) fine depths (unsorted order follows ``u``).
    """
    batch, num_rays, num_samples, _ = depths.shape
    if num_samples < 4:
        raise ValueError(f"importance sampling needs at least 4 coarse samples per ray, got {num_samples}")
    if weights.shape[:3] != (batch, num_rays, num_samples - 1):
        raise ValueError(
            f"weights must have shape ({batch}, {num_rays}, {num_samples - 1}, 1), got {tuple(weights.shape)}"
        )
    depths_flat = depths.reshape(batch * num_rays, num_samples)
    smoothed = weights.reshape(batch * num_rays, 1, num_samples - 1).float()
    smoothed = F.max_pool1d(smoothed, kernel_size=2, stride=1, padding=1)  # (R, 1, D)
    smoothed = F.avg_pool1d(smoothed, kernel_size=2, stride=1).squeeze(1)  # (R, D-1)
    smoothed = smoothed + WEIGHT_SMOOTHING_FLOOR
    midpoints = 0.5 * (depths_flat[:, :-1] + depths_flat[:, 1:])  # (R, D-1)

    if u is None:
        if deterministic:
            u = torch.linspace(0.0, 1.0, num_importance, device=depths.device, dtype=smoothed.dtype)
            u = u.expand(batch * num_rays, num_importance)
        else:
            u = _uniform((batch * num_rays, num_importance), generator, depths.device, smoothed.dtype)
    else:
        if u.shape != (batch, num_rays, num_importance):
            raise ValueError(f"u must have shape ({batch}, {num_rays}, {num_importance}), got {tuple(u.shape)}")
        u = u.reshape(batch * num_rays, num_importance)
    samples = sample_pdf(midpoints, smoothed[:, 1:-1], u)
    return samples.reshape(batch, num_rays, num_importance, 1)


def merge_samples(
    depths1: torch.Tensor,
    colors1: torch.Tensor,
    densities1: torch.Tensor,
    depths2: torch.Tensor,
    colors2: torch.Tensor,
    densities2: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenate two sample sets along dim 2 and sort them by depth.

    Args:
        depths1, colors1, densities1: (B, M, S1, 1), (B, M, S1, C), (B, M, S1, 1).
        depths2, colors2, densities2: (B, M, S2, 1), (B, M, S2, C), (B, M, S2, 1).

    Returns:
        depths (B, M, S1+S2, 1) ascending, then colors (B, M, S1+S2, C) and densities (B, M, S1+S2, 1) in
        the same order.
    """
    depths = torch.cat([depths1, depths2], dim=-2)
    colors = torch.cat([colors1, colors2], dim=-2)
    densities = torch.cat([densities1, densities2], dim=-2)
    depths, order = torch.sort(depths, dim=-2, stable=True)
    colors = torch.gather(colors, -2, order.expand(-1, -1, -1, colors.shape[-1]))
    densities = torch.gather(densities, -2, order)
    return depths, colors, densities


# ------------------------------------------------------------------------------------------------------------
# Model evaluation


def run_model(
    planes: torch.Tensor, decoder: OSGDecoder, coords: torch.Tensor, box_warp: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode tri-plane features at arbitrary points (also used for density grids / mesh extraction).

    Args:
        planes: (B, 3, C, H, W) tri-planes.
        decoder: the OSG decoder.
        coords: (B, M, 3) world-space points.
        box_warp: side of the cube spanned by the planes.

    Returns:
        rgb (B, M, output_dim) in [-0.001, 1.001] and raw sigma (B, M, 1).
    """
    # Same result as ``decoder(sample_from_planes(...))``, bit for bit, without the per-plane feature tensor.
    return decoder.decode_mean(sample_mean_from_planes(planes, coords, box_warp))


# ------------------------------------------------------------------------------------------------------------
# Module


class ImportanceRenderer(nn.Module):
    """EG3D ``ImportanceRenderer``: coarse stratified pass, importance pass, merged compositing.

    Parameter-free. Rays are processed in chunks of at most ``max_points_per_chunk`` decoded points per pass
    (at least one ray per chunk). All random numbers are drawn for the whole batch before chunking and the
    final depth clamp uses bounds gathered over all chunks, so the chunk size does not change the algorithm;
    results can differ only by float32 rounding in the batched matrix products (observed <= 2.4e-7). With a
    single chunk it runs the official renderer's operations in the same order; the parity tests compare its pieces
    with the official ones (exactly equal, ``tests/test_rendering.py``) and its output through the generator
    (``docs/architecture.md``).

    Args:
        config: rendering options (EG3D ``rendering_kwargs``).
        max_points_per_chunk: memory bound, counted as ``B * rays * (D + N)`` points per chunk; None (default)
            picks one per device at render time (:func:`default_points_per_chunk`).
    """

    def __init__(self, config: RenderingConfig, max_points_per_chunk: int | None = None) -> None:
        super().__init__()
        if max_points_per_chunk is not None and max_points_per_chunk < 1:
            raise ConfigError(f"max_points_per_chunk must be positive, got {max_points_per_chunk}")
        self.config = config
        self.max_points_per_chunk = max_points_per_chunk

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"depth_resolution={c.depth_resolution}, "
            f"depth_resolution_importance={c.depth_resolution_importance}, "
            f"ray_start={c.ray_start}, ray_end={c.ray_end}, box_warp={c.box_warp}, "
            f"max_points_per_chunk={self.max_points_per_chunk}"
        )

    def forward(
        self,
        planes: torch.Tensor,
        decoder: OSGDecoder,
        ray_origins: torch.Tensor,
        ray_directions: torch.Tensor,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> RenderOutput:
        """Render rays through the tri-planes.

        Args:
            planes: (B, 3, C, H, W) tri-planes.
            decoder: OSG decoder mapping plane features to (rgb, sigma).
            ray_origins: (B, M, 3).
            ray_directions: (B, M, 3), unit length.
            deterministic: bin-centre coarse samples and ``linspace`` importance quantiles (EG3D parity mode);
                otherwise samples are jittered as in the official code (also at inference).
            generator: source of all random numbers (jitter, importance quantiles, density noise).

        Returns:
            :class:`RenderOutput` with features (B, M, C) in [-1, 1], depth (B, M, 1), weight_sum (B, M, 1).
        """
        if ray_origins.ndim != 3 or ray_origins.shape[-1] != 3 or ray_directions.shape != ray_origins.shape:
            raise ValueError(
                "ray_origins and ray_directions must both have shape (B, M, 3), got "
                f"{tuple(ray_origins.shape)} and {tuple(ray_directions.shape)}"
            )
        if planes.ndim != 5 or planes.shape[0] != ray_origins.shape[0] or planes.shape[1] != 3:
            raise ValueError(f"planes must have shape ({ray_origins.shape[0]}, 3, C, H, W), got {tuple(planes.shape)}")
        cfg = self.config
        batch, num_rays, _ = ray_origins.shape
        num_coarse, num_fine = cfg.depth_resolution, cfg.depth_resolution_importance
        device, dtype = ray_origins.device, ray_origins.dtype

        # 1. All random numbers for the whole batch, in a fixed order:
        #    jitter, coarse density noise, importance quantiles, fine density noise.
        coarse_shape = (batch, num_rays, num_coarse, 1)
        fine_shape = (batch, num_rays, num_fine, 1)
        if deterministic:
            jitter = torch.full(coarse_shape, 0.5, device=device, dtype=dtype)
        else:
            jitter = _uniform(coarse_shape, generator, device, dtype)
        noise_coarse = noise_fine = quantiles = None
        if cfg.density_noise > 0:
            noise_coarse = _normal(coarse_shape, generator, device, dtype) * cfg.density_noise
        if num_fine > 0:
            if deterministic:
                quantiles = torch.linspace(0.0, 1.0, num_fine, device=device, dtype=torch.float32)
                quantiles = quantiles.expand(batch, num_rays, num_fine)
            else:
                quantiles = _uniform((batch, num_rays, num_fine), generator, device, torch.float32)
            if cfg.density_noise > 0:
                noise_fine = _normal(fine_shape, generator, device, dtype) * cfg.density_noise

        # 2. Chunks of rays; the depth clamp bounds are collected over all chunks.
        limit = self.max_points_per_chunk or default_points_per_chunk(device)
        rays_per_chunk = max(1, limit // (batch * (num_coarse + num_fine)))
        features, depths, weight_sums = [], [], []
        depth_min = depth_max = None
        for start in range(0, num_rays, rays_per_chunk):
            rays = slice(start, start + rays_per_chunk)
            out, all_depths = self._render_chunk(
                planes,
                decoder,
                ray_origins[:, rays],
                ray_directions[:, rays],
                jitter[:, rays],
                None if quantiles is None else quantiles[:, rays],
                None if noise_coarse is None else noise_coarse[:, rays],
                None if noise_fine is None else noise_fine[:, rays],
            )
            features.append(out.features)
            depths.append(out.depth)
            weight_sums.append(out.weight_sum)
            chunk_min, chunk_max = all_depths.min(), all_depths.max()
            depth_min = chunk_min if depth_min is None else torch.minimum(depth_min, chunk_min)
            depth_max = chunk_max if depth_max is None else torch.maximum(depth_max, chunk_max)

        # 3. Clamp the depth to the range of every sample depth in the batch (official behaviour).
        depth = torch.clamp(torch.cat(depths, dim=1), depth_min, depth_max)
        return RenderOutput(features=torch.cat(features, dim=1), depth=depth, weight_sum=torch.cat(weight_sums, dim=1))

    def _evaluate(
        self,
        planes: torch.Tensor,
        decoder: OSGDecoder,
        origins: torch.Tensor,
        directions: torch.Tensor,
        depths: torch.Tensor,
        noise: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode the points ``o + t d``: depths (B, m, S, 1) -> colors (B, m, S, C), densities (B, m, S, 1).

        ``noise`` (B, m, S, 1), if given, is added to the raw densities.
        """
        batch, num_rays, num_samples, _ = depths.shape
        coords = origins.unsqueeze(-2) + depths * directions.unsqueeze(-2)  # (B, m, S, 3)
        rgb, sigma = run_model(planes, decoder, coords.reshape(batch, -1, 3), self.config.box_warp)
        # Composite in float32 even when the MLP ran under bf16/fp16 autocast (no-op, hence exact, in float32).
        rgb, sigma = rgb.float(), sigma.float()
        if noise is not None:
            sigma = sigma + noise.reshape(batch, -1, 1)
        return (
            rgb.reshape(batch, num_rays, num_samples, rgb.shape[-1]),
            sigma.reshape(batch, num_rays, num_samples, 1),
        )

    def _render_chunk(
        self,
        planes: torch.Tensor,
        decoder: OSGDecoder,
        origins: torch.Tensor,
        directions: torch.Tensor,
        jitter: torch.Tensor,
        quantiles: torch.Tensor | None,
        noise_coarse: torch.Tensor | None,
        noise_fine: torch.Tensor | None,
    ) -> tuple[MarchOutput, torch.Tensor]:
        """Both passes for a chunk of m rays.

        Returns the march output with the depth not yet clamped, and the composited sample depths
        (B, m, S, 1).
        """
        cfg = self.config
        depths = stratified_depths(jitter, cfg.ray_start, cfg.ray_end, cfg.disparity_space_sampling)
        colors, densities = self._evaluate(planes, decoder, origins, directions, depths, noise_coarse)
        if quantiles is not None:
            coarse_weights = compute_weights(densities, depths)
            depths_fine = sample_importance(depths, coarse_weights, quantiles.shape[-1], u=quantiles)
            colors_fine, densities_fine = self._evaluate(planes, decoder, origins, directions, depths_fine, noise_fine)
            depths, colors, densities = merge_samples(
                depths, colors, densities, depths_fine, colors_fine, densities_fine
            )
        out = ray_march(colors, densities, depths, white_back=cfg.white_back, clamp_depth=False)
        return out, depths
