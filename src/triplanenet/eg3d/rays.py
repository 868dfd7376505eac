"""Camera rays from EG3D's 25-number camera label.

The label is ``[cam2world (4x4, row-major, OpenCV axes: +x right, +y down, +z forward), intrinsics (3x3,
row-major, normalised by the image size)]``. One ray goes through the centre of each pixel of an R x R image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from triplanenet.eg3d import camera
from triplanenet.eg3d.camera import LABEL_DIM
from triplanenet.errors import CameraError


def split_label(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched (B, 25) labels -> (cam2world (B, 4, 4), intrinsics (B, 3, 3)), with a shape check.

    Raises:
        CameraError: ``c`` is not a (B, 25) tensor.
    """
    if c.ndim != 2 or c.shape[-1] != LABEL_DIM:
        raise CameraError(
            f"camera label must have shape (B, 25) = [cam2world 4x4, intrinsics 3x3], got {tuple(c.shape)}; "
            "add a batch dimension with c[None] if you have a single camera"
        )
    return camera.split_label(c)


def generate_rays(
    cam2world: torch.Tensor, intrinsics: torch.Tensor, resolution: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One ray per pixel centre, exactly like EG3D's ``RaySampler``.

    Pixel ``m = row * R + col`` has normalised image coordinates ``u = (col + 0.5) / R`` and
    ``v = (row + 0.5) / R``. Its camera-space direction at depth 1 is

        x = (u - cx + cy * s / fy - s * v / fy) / fx,   y = (v - cy) / fy,   z = 1      (s = skew = K[0, 1])

    which is mapped to world space with ``cam2world`` and normalised.

    Args:
        cam2world: (B, 4, 4) camera-to-world matrices (OpenCV camera axes).
        intrinsics: (B, 3, 3) intrinsics normalised by the image size (principal point around 0.5).
        resolution: image side R.

    Returns:
        origins: (B, R*R, 3) camera centres (the same for every ray of a camera).
        directions: (B, R*R, 3) unit-length world-space directions.

    Raises:
        CameraError: shapes do not match or ``resolution`` is not positive.
    """
    if cam2world.ndim != 3 or cam2world.shape[1:] != (4, 4):
        raise CameraError(f"cam2world must have shape (B, 4, 4), got {tuple(cam2world.shape)}")
    if intrinsics.shape != (cam2world.shape[0], 3, 3):
        raise CameraError(
            f"intrinsics must have shape ({cam2world.shape[0]}, 3, 3) to match cam2world, got {tuple(intrinsics.shape)}"
        )
    if resolution < 1:
        raise CameraError(f"ray resolution must be a positive integer, got {resolution}")
    batch = cam2world.shape[0]
    device, dtype = cam2world.device, cam2world.dtype

    # Pixel centres in [0, 1]; same arithmetic (i * (1/R) + 0.5/R) as the official sampler.
    steps = torch.arange(resolution, device=device, dtype=dtype) * (1.0 / resolution) + (0.5 / resolution)
    rows, cols = torch.meshgrid(steps, steps, indexing="ij")
    u = cols.reshape(1, -1)  # (1, R*R) horizontal, indexes columns
    v = rows.reshape(1, -1)  # (1, R*R) vertical, indexes rows

    fx = intrinsics[:, 0, 0, None]
    fy = intrinsics[:, 1, 1, None]
    cx = intrinsics[:, 0, 2, None]
    cy = intrinsics[:, 1, 2, None]
    skew = intrinsics[:, 0, 1, None]

    # Camera-space point at depth 1 (homogeneous), then into world space.
    x_cam = (u - cx + cy * skew / fy - skew * v / fy) / fx  # (B, R*R)
    y_cam = (v - cy) / fy  # (B, R*R)
    ones = torch.ones_like(x_cam)
    points_cam = torch.stack((x_cam, y_cam, ones, ones), dim=1)  # (B, 4, R*R)
    # Camera geometry stays in the labels' precision under bf16/fp16 autocast (a bf16 bmm here misplaces the rays
    # by ~0.4 % and wrecks the image); in float32 this is the plain bmm.
    with torch.autocast(device.type, enabled=False):
        points_world = torch.bmm(cam2world, points_cam).transpose(1, 2)[..., :3]  # (B, R*R, 3)

    centres = cam2world[:, :3, 3]  # (B, 3)
    directions = F.normalize(points_world - centres[:, None, :], dim=2)
    origins = centres[:, None, :].expand(batch, resolution * resolution, 3).contiguous()
    return origins, directions
