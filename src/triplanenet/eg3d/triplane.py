"""Tri-plane feature lookup and the small MLP (``OSGDecoder``) that turns features into colour and density.

A 3-D point is projected onto three axis-aligned feature planes; the bilinearly sampled features of the three
planes are averaged and decoded by a two-layer MLP into a 32-channel "colour" feature and a raw density.

EG3D's plane axes contain a known quirk that trained checkpoints depend on: the third plane is indexed with
``(z, x)`` instead of ``(y, z)`` (NVlabs/eg3d issue #67). We reproduce it exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from triplanenet.eg3d.layers import FullyConnectedLayer

# Rows of each plane's axis matrix P (official ``generate_planes``): a point ``p`` (row vector) lands at
# ``p @ inverse(P)`` and its first two components are the in-plane coordinates.
PLANE_AXES: tuple[tuple[tuple[float, float, float], ...], ...] = (
    ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),  # XY plane
    ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 1.0, 0.0)),  # XZ plane
    ((0.0, 0.0, 1.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),  # "YZ" plane, really (z, x): EG3D's bug, kept
)

# Which coordinate columns ``p @ inverse(P)[:, :2]`` selects for each plane. Because every P is a permutation
# matrix the product is an exact column selection, so we index instead of multiplying.
PLANE_COORD_INDICES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (2, 0))

NUM_PLANES = 3


def plane_axes(device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The official plane axis matrices, a fresh (3, 3, 3) tensor (plane, row, column)."""
    return torch.tensor(PLANE_AXES, device=device, dtype=dtype)


def project_onto_planes(coords: torch.Tensor) -> torch.Tensor:
    """2-D coordinates of points on each of the three planes.

    Equal (exactly) to ``coords @ inverse(P)[..., :2]`` for each plane axis matrix ``P`` in
    :data:`PLANE_AXES`.

    Args:
        coords: (B, M, 3) points.

    Returns:
        (B*3, M, 2), plane-minor order: row ``b*3 + k`` holds the projections of batch item ``b`` onto plane
        ``k`` (plane 0: (x, y), plane 1: (x, z), plane 2: (z, x)).
    """
    if coords.ndim != 3 or coords.shape[-1] != 3:
        raise ValueError(f"coords must have shape (B, M, 3), got {tuple(coords.shape)}")
    batch, num_points, _ = coords.shape
    # Column copies instead of index_select with a freshly built index tensor: same values, and no host-to-device
    # copy per call on CUDA (which would also break CUDA-graph capture).
    columns = coords.unbind(-1)
    selected = torch.stack([columns[i] for pair in PLANE_COORD_INDICES for i in pair], dim=-1)  # (B, M, 6)
    # (B, M, 3 planes, 2) -> (B, 3, M, 2) -> (B*3, M, 2)
    return selected.reshape(batch, num_points, NUM_PLANES, 2).permute(0, 2, 1, 3).reshape(-1, num_points, 2)


def _grid_sample_planes(planes: torch.Tensor, coords: torch.Tensor, box_warp: float) -> torch.Tensor:
    """Shape checks, projection and ``grid_sample`` shared by the two samplers: (B·3, C, 1, M) features."""
    if planes.ndim != 5 or planes.shape[1] != NUM_PLANES:
        raise ValueError(f"planes must have shape (B, 3, C, H, W), got {tuple(planes.shape)}")
    if coords.ndim != 3 or coords.shape[0] != planes.shape[0] or coords.shape[-1] != 3:
        raise ValueError(f"coords must have shape (B, M, 3) with B={planes.shape[0]}, got {tuple(coords.shape)}")
    batch, _, channels, height, width = planes.shape
    grid = project_onto_planes(coords * (2 / box_warp)).unsqueeze(1)  # (B*3, 1, M, 2)
    features = F.grid_sample(
        planes.reshape(batch * NUM_PLANES, channels, height, width),
        grid.to(planes.dtype),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )  # (B*3, C, 1, M)
    return features


def sample_from_planes(planes: torch.Tensor, coords: torch.Tensor, box_warp: float) -> torch.Tensor:
    """Bilinearly sample tri-plane features at 3-D points.

    The cube ``[-box_warp/2, box_warp/2]^3`` maps onto the planes' full extent (``align_corners=False``);
    points outside it read zeros (zero padding). The first in-plane coordinate indexes the width axis.

    Args:
        planes: (B, 3, C, H, W) plane features.
        coords: (B, M, 3) world-space points.
        box_warp: side length of the cube spanned by the planes.

    Returns:
        (B, 3, M, C) features per plane.
    """
    features = _grid_sample_planes(planes, coords, box_warp)  # (B*3, C, 1, M)
    batch, _, channels = planes.shape[:3]
    num_points = coords.shape[1]
    return features.permute(0, 3, 2, 1).reshape(batch, NUM_PLANES, num_points, channels)


def sample_mean_from_planes(planes: torch.Tensor, coords: torch.Tensor, box_warp: float) -> torch.Tensor:
    """Mean over the three planes of the bilinearly sampled features: (B, M, C).

    Bit-identical to ``sample_from_planes(planes, coords, box_warp).mean(dim=1)`` (the same three values are summed
    in the same order) but averages straight from ``grid_sample``'s (B·3, C, 1, M) layout, so the full per-plane
    (B, 3, M, C) tensor is never materialised: one copy of 3·B·M·C floats less per decoded chunk (the renderer's
    hot path).
    """
    features = _grid_sample_planes(planes, coords, box_warp)  # (B*3, C, 1, M)
    batch, _, channels = planes.shape[:3]
    num_points = coords.shape[1]
    per_plane = features.view(batch, NUM_PLANES, channels, num_points).permute(0, 1, 3, 2)  # (B, 3, M, C) view
    # The result must be row-major (B, M, C) like the unfused path's (a transposed layout would send the MLP's matmul
    # down another BLAS path and change its rounding). Without autograd the mean is written straight into such a
    # tensor; ``out=`` does not support autograd, so with gradients the mean is made contiguous afterwards.
    if torch.is_grad_enabled() and per_plane.requires_grad:
        return per_plane.mean(dim=1).contiguous()
    mean = torch.empty((batch, num_points, channels), device=features.device, dtype=features.dtype)
    return torch.mean(per_plane, dim=1, out=mean)


class OSGDecoder(nn.Module):
    """EG3D's tri-plane decoder: mean over planes -> FC -> softplus -> FC.

    Keys: ``net.0.weight`` (hidden, n_features), ``net.0.bias``, ``net.2.weight`` (1 + output_dim, hidden),
    ``net.2.bias`` — identical to the official ``decoder.net.*`` entries of ``G_ema``.

    The official module also receives ray directions but ignores them (no view dependence); so does this one.
    """

    def __init__(
        self, n_features: int = 32, hidden_dim: int = 64, output_dim: int = 32, lr_multiplier: float = 1.0
    ) -> None:
        super().__init__()
        self.n_features = n_features
        self.hidden_dim = hidden_dim
        self.output_dim = output_dim
        self.net = nn.Sequential(
            FullyConnectedLayer(n_features, hidden_dim, lr_multiplier=lr_multiplier),
            nn.Softplus(),
            FullyConnectedLayer(hidden_dim, 1 + output_dim, lr_multiplier=lr_multiplier),
        )

    def forward(self, sampled_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode sampled tri-plane features.

        Args:
            sampled_features: (B, 3, M, n_features), as returned by :func:`sample_from_planes`.

        Returns:
            rgb: (B, M, output_dim) features in [-0.001, 1.001] (sigmoid widened as in MipNeRF); the first
                three channels become the low-resolution RGB image.
            sigma: (B, M, 1) raw density (no activation; the ray marcher applies ``softplus(sigma - 1)``).
        """
        if sampled_features.ndim != 4 or sampled_features.shape[-1] != self.n_features:
            raise ValueError(
                f"sampled_features must have shape (B, planes, M, {self.n_features}), "
                f"got {tuple(sampled_features.shape)}"
            )
        return self.decode_mean(sampled_features.mean(dim=1))

    def decode_mean(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode plane-averaged features x (B, M, n_features) (see :func:`sample_mean_from_planes`).

        Returns rgb (B, M, output_dim) and raw sigma (B, M, 1) as :meth:`forward`.
        """
        batch, num_points, channels = x.shape
        x = self.net(x.reshape(batch * num_points, channels)).reshape(batch, num_points, -1)
        rgb = torch.sigmoid(x[..., 1:]) * (1 + 2 * 0.001) - 0.001
        sigma = x[..., :1]
        return rgb, sigma
