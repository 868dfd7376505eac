"""Sphere-traced renders of the procedural heads, with ground truth (depth, mask, landmarks, mesh).

Rays are EG3D's (:func:`triplanenet.eg3d.rays.generate_rays`: one ray through each pixel centre, unit
directions), so a :class:`SynthSample` lines up pixel for pixel with the generator's output for the same
camera label.

Conventions of :func:`render_heads`:

* ``image``: (B, 3, R, R) in [-1, 1]; background pixels get ``background`` (default -1 = black, like EG3D's
  raw composites with ``white_back=False``).
* ``depth``: (B, 1, R, R) distance from the camera centre along the unit ray (EG3D's ``image_depth``);
  background pixels hold ``background_depth`` (default :data:`RAY_END` = 3.3).
* ``mask``: (B, 1, R, R) float, 1 where the ray hits the head.
* ``landmarks_3d``: (B, 5, 3) world points on the surface, in the order of :data:`LANDMARK_NAMES`:
  the eye and mouth corner on the image's **left** in a frontal view come first (world -x, the subject's
  right), as in the usual 5-point (MTCNN/ArcFace) convention. Eye landmarks are the pupil centres.
* ``landmarks_2d``: (B, 5, 2) their projections as ``(x, y)`` pixel coordinates, x to the right, y down,
  pixel ``(row i, col j)`` covering ``[j, j+1) × [i, i+1)`` (its centre is at ``(j + 0.5, i + 0.5)``).
* ``landmarks_visible``: (B, 5) bool, the landmark is inside the image and not occluded.

Shading: albedo (skin with pores, mottling, freckles, blush, lips and eyebrows; hair with strands running
away from the parting; eyes with sclera, striated iris and pupil) lit by a fixed key light from the front and
above (mirror symmetric about x = 0), a sky/ground ambient term, ambient occlusion from the field, and a small
specular term, then sRGB-encoded. Everything is deterministic given the identity vector and the camera.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from triplanenet.eg3d import camera as cam
from triplanenet.eg3d.rays import generate_rays, split_label
from triplanenet.errors import ConfigError
from triplanenet.mesh import Mesh
from triplanenet.synth.params import HeadParams
from triplanenet.synth.sdf import (
    STEP_SCALE,
    Coords,
    Geometry,
    SdfParts,
    head_geometry,
    head_parts,
    head_sdf,
    to_local,
    to_world,
)

__all__ = [
    "LANDMARK_NAMES",
    "RAY_END",
    "RAY_START",
    "SynthSample",
    "head_albedo",
    "head_landmarks",
    "head_mesh",
    "project_points",
    "render_heads",
    "sample_cameras",
]

RAY_START: float = 2.25
"""EG3D FFHQ ``ray_start``: the head never comes closer to a radius-2.7 camera."""
RAY_END: float = 3.3
"""EG3D FFHQ ``ray_end``; also the default depth of background pixels."""
LANDMARK_NAMES: tuple[str, ...] = ("left_eye", "right_eye", "nose_tip", "mouth_left", "mouth_right")
"""Landmark order; "left" is the image left in a frontal view (world -x, the subject's right)."""

_TRACE_BOX = 0.5  # rays are traced inside the tri-plane cube only
_HIT_PIXELS = 0.05  # a ray has converged when the field is below this fraction of its pixel footprint
_LAST_STEP_PIXELS = 2.0  # after the last step, rays still this close (in pixels) to the surface count as hits
_MAX_CHUNK = 1 << 18  # rays per tracing chunk (bounds memory at high resolution)
_LIGHT = (0.0, 0.5, 1.0)  # key light direction (towards the light), world space, symmetric about x = 0


@dataclass
class SynthSample:
    """One rendered batch with ground truth (see the module docstring for every convention)."""

    image: torch.Tensor
    """(B, 3, R, R) RGB in [-1, 1]."""
    depth: torch.Tensor
    """(B, 1, R, R) distance along the unit ray; ``background_depth`` where ``mask == 0``."""
    mask: torch.Tensor
    """(B, 1, R, R) 1.0 on the head, 0.0 on the background."""
    landmarks_2d: torch.Tensor
    """(B, 5, 2) ``(x, y)`` pixel coordinates (pixel centres at ``j + 0.5``)."""
    landmarks_3d: torch.Tensor
    """(B, 5, 3) world coordinates on the surface."""
    landmarks_visible: torch.Tensor
    """(B, 5) bool: inside the image and not hidden behind another part of the head."""
    cameras: torch.Tensor
    """(B, 25) the camera labels used."""
    params: HeadParams
    """The B identities rendered."""


# ------------------------------------------------------------------------------------------------------------
# Cameras


def sample_cameras(
    generator: torch.Generator | None,
    n: int,
    yaw_std: float = 0.3,
    pitch_std: float = 0.1,
    max_yaw: float = 0.8,
    max_pitch: float = 0.3,
) -> torch.Tensor:
    """``n`` random FFHQ-style look-at cameras (radius 2.7, pivot (0, 0, 0.2), focal 4.2647).

    Yaw and pitch are normal with the given standard deviations (radians), clipped to ``±max_yaw`` and
    ``±max_pitch``. Returns (n, 25) labels.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"number of cameras must be a positive integer, got {n!r}")
    yaw = (torch.randn(n, generator=generator) * yaw_std).clamp(-max_yaw, max_yaw)
    pitch = (torch.randn(n, generator=generator) * pitch_std).clamp(-max_pitch, max_pitch)
    return cam.camera_label(yaw, pitch)


def project_points(points: torch.Tensor, cameras: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Project world points into the cameras' images.

    Args:
        points: (B, N, 3) world coordinates.
        cameras: (B, 25) EG3D labels.
        resolution: image side R.

    Returns:
        ``(pixels (B, N, 2), distance (B, N))``: ``(x, y)`` pixel coordinates with pixel centres at
        ``j + 0.5`` (the inverse of :func:`generate_rays`), and the distance from the camera centre.
    """
    cam2world, intrinsics = split_label(cameras)
    rotation, centre = cam2world[:, :3, :3], cam2world[:, :3, 3]
    local = torch.einsum("bji,bnj->bni", rotation, points - centre[:, None, :])  # Rᵀ (p − c)
    xc, yc = local[..., 0] / local[..., 2], local[..., 1] / local[..., 2]
    fx, fy = intrinsics[:, 0, 0, None], intrinsics[:, 1, 1, None]
    cx, cy, skew = intrinsics[:, 0, 2, None], intrinsics[:, 1, 2, None], intrinsics[:, 0, 1, None]
    u = fx * xc + skew * yc + cx
    v = fy * yc + cy
    pixels = torch.stack((u, v), dim=-1) * resolution
    return pixels, torch.linalg.vector_norm(points - centre[:, None, :], dim=-1)


# ------------------------------------------------------------------------------------------------------------
# Sphere tracing


# Bounding volume of every head the parameter ranges allow (world units): an ellipsoid around the head and
# hair, and a vertical cylinder around the neck below it. Rays are traced only where they cross it.
BOUND_CENTRE: tuple[float, float, float] = (0.0, -0.03, 0.06)
BOUND_RADII: tuple[float, float, float] = (0.29, 0.46, 0.40)
NECK_BOUND: tuple[float, float, float] = (-0.005, 0.165, -0.1)
"""Neck cylinder: axis at ``(x, z) = (0, NECK_BOUND[0])``, radius ``NECK_BOUND[1]``, for ``y < NECK_BOUND[2]``."""


def _box_interval(origins: torch.Tensor, dirs: torch.Tensor, half: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distances of rays (K, 3) through the cube ``[-half, half]^3`` (entry >= 0)."""
    safe = torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    t_a = (-half - origins) / safe
    t_b = (half - origins) / safe
    t0 = torch.minimum(t_a, t_b).amax(dim=-1).clamp_min(0.0)
    t1 = torch.maximum(t_a, t_b).amin(dim=-1)
    return t0, t1


def _quadratic_interval(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Roots of ``a t² + b t + c`` (a > 0) as an interval; empty (t0 > t1) when there are none."""
    disc = b * b - 4.0 * a * c
    root = torch.sqrt(disc.clamp_min(0.0))
    a2 = (2.0 * a).clamp_min(1e-12)
    t0 = (-b - root) / a2
    t1 = (-b + root) / a2
    empty = disc <= 0
    return torch.where(empty, torch.full_like(t0, math.inf), t0), torch.where(empty, torch.full_like(t1, -math.inf), t1)


def _bound_interval(origins: torch.Tensor, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where rays (K, 3) cross the head's bounding volume, clipped to the tri-plane cube; empty when t0 >= t1."""
    centre = torch.tensor(BOUND_CENTRE, device=origins.device)
    radii = torch.tensor(BOUND_RADII, device=origins.device)
    o = (origins - centre) / radii
    d = dirs / radii
    e0, e1 = _quadratic_interval((d * d).sum(-1), 2.0 * (o * d).sum(-1), (o * o).sum(-1) - 1.0)
    axis_z, radius, top = NECK_BOUND
    ox, oz = origins[:, 0], origins[:, 2] - axis_z
    dx, dz = dirs[:, 0], dirs[:, 2]
    c0, c1 = _quadratic_interval(dx * dx + dz * dz, 2.0 * (ox * dx + oz * dz), ox * ox + oz * oz - radius * radius)
    dy = torch.where(dirs[:, 1].abs() < 1e-9, torch.full_like(dx, -1e-9), dirs[:, 1])
    y_a, y_b = (-_TRACE_BOX - origins[:, 1]) / dy, (top - origins[:, 1]) / dy
    c0 = torch.maximum(c0, torch.minimum(y_a, y_b))
    c1 = torch.minimum(c1, torch.maximum(y_a, y_b))
    neck_ok = c0 < c1
    t0 = torch.where(neck_ok, torch.minimum(e0, c0), e0)
    t1 = torch.where(neck_ok, torch.maximum(e1, c1), e1)
    b0, b1 = _box_interval(origins, dirs, _TRACE_BOX)
    return torch.maximum(t0, b0), torch.minimum(t1, b1)


def _trace(
    origins: torch.Tensor,
    dirs: torch.Tensor,
    geo: Geometry,
    index: torch.Tensor,
    footprint: torch.Tensor,
    max_steps: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sphere-trace rays (K, 3) against the identities ``index`` (K,).

    ``footprint`` (K,) is the ray's pixel size per unit distance; a ray converges when the field drops below
    ``_HIT_PIXELS`` pixels. Converged rays leave the active set. After ``max_steps`` the remaining rays count as
    hits when within ``_LAST_STEP_PIXELS`` pixels of the surface (grazing rays on silhouettes and in creases).
    Returns ``(t, hit)``.
    """
    k = origins.shape[0]
    t0, t1 = _bound_interval(origins, dirs)
    t_out = t0.clone()
    hit_out = torch.zeros(k, dtype=torch.bool, device=origins.device)
    active = (t0 < t1).nonzero().squeeze(1)
    a_o, a_d, a_t, a_t1, a_fp = origins[active], dirs[active], t0[active], t1[active], footprint[active]
    a_geo = geo.gather(index[active])
    for step in range(max_steps):
        if active.numel() == 0:
            break
        px = a_o + a_t[:, None] * a_d
        d = head_sdf((px[:, 0], px[:, 1], px[:, 2]), a_geo)
        tol = _HIT_PIXELS * a_fp * a_t
        converged = d < tol
        escaped = a_t > a_t1
        last = step == max_steps - 1
        if last:
            converged = converged | ((d < _LAST_STEP_PIXELS * a_fp * a_t) & ~escaped)
        finished = converged | escaped
        a_t = a_t + torch.where(finished, torch.zeros_like(d), STEP_SCALE * d)
        n_done = int(finished.sum())
        # Compact when many rays are done (big batches) or all of them are (few rays, e.g. landmarks).
        if last or n_done == active.numel() or n_done * 8 > active.numel():
            if last:
                finished = torch.ones_like(finished)
            done = active[finished]
            t_out[done] = a_t[finished]
            hit_out[done] = converged[finished]
            keep = ~finished
            active = active[keep]
            a_o, a_d, a_t, a_t1, a_fp = a_o[keep], a_d[keep], a_t[keep], a_t1[keep], a_fp[keep]
            a_geo = Geometry(a_geo.matrix[:, keep], a_geo.names)
    if active.numel():
        t_out[active] = a_t
    # Two Newton-like refinement steps for the hits.
    hits = hit_out.nonzero().squeeze(1)
    if hits.numel():
        h_geo = geo.gather(index[hits])
        h_t = t_out[hits]
        for _ in range(2):
            px = origins[hits] + h_t[:, None] * dirs[hits]
            d = head_sdf((px[:, 0], px[:, 1], px[:, 2]), h_geo)
            h_t = h_t + d
        t_out[hits] = h_t
    return t_out, hit_out


def _field(points: torch.Tensor, geo: Geometry) -> torch.Tensor:
    return head_sdf((points[:, 0], points[:, 1], points[:, 2]), geo)


def _normals(points: torch.Tensor, geo: Geometry, h: float = 4e-4) -> torch.Tensor:
    """Unit outward normals (K, 3) by the tetrahedron finite-difference rule."""
    offsets = torch.tensor(
        [[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, 1.0, 1.0]], device=points.device
    )
    grad = torch.zeros_like(points)
    for off in offsets:
        grad = grad + off * _field(points + h * off, geo)[:, None]
    return F.normalize(grad, dim=-1)


def _occlusion(points: torch.Tensor, normals: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """Ambient occlusion in [0, 1] (1 = open) from four field samples along the normal."""
    occ = torch.zeros(points.shape[0], device=points.device)
    for i, dist in enumerate((0.006, 0.015, 0.03, 0.05)):
        value = _field(points + dist * normals, geo)
        occ = occ + (0.8**i) * ((dist - value) / dist).clamp_min(0.0)
    return (1.0 - 0.45 * occ).clamp(0.0, 1.0)


# ------------------------------------------------------------------------------------------------------------
# Procedural texture


_P1, _P2, _P3 = 73856093, 19349663, 83492791
_MASK32 = 0xFFFFFFFF


def _hash01(h: torch.Tensor) -> torch.Tensor:
    """Integer (int64, any value) -> float in [0, 1), well mixed; no int64 overflow."""
    h = h & _MASK32
    h = ((h ^ (h >> 15)) * 0x2C1B3C6D) & _MASK32
    h = ((h ^ (h >> 12)) * 0x297A2D39) & _MASK32
    h = h ^ (h >> 15)
    return (h & 0xFFFFFF).to(torch.float32) * (1.0 / 16777216.0)


def value_noise(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    """Hashed 3D value noise in [0, 1] with a smooth (C1) trilinear blend; one lattice cell per unit.

    ``seed`` is an int64 tensor broadcasting against the coordinates; different seeds give unrelated noise.
    """
    fx, fy, fz = torch.floor(x), torch.floor(y), torch.floor(z)
    ux, uy, uz = x - fx, y - fy, z - fz
    ux = ux * ux * (3.0 - 2.0 * ux)
    uy = uy * uy * (3.0 - 2.0 * uy)
    uz = uz * uz * (3.0 - 2.0 * uz)
    hx0 = fx.to(torch.int64) * _P1
    hy0 = fy.to(torch.int64) * _P2
    hz0 = fz.to(torch.int64) * _P3 + seed * 2654435761
    hx1, hy1, hz1 = hx0 + _P1, hy0 + _P2, hz0 + _P3

    def corner(hx: torch.Tensor, hy: torch.Tensor, hz: torch.Tensor) -> torch.Tensor:
        return _hash01(hx ^ hy ^ hz)

    c00 = torch.lerp(corner(hx0, hy0, hz0), corner(hx1, hy0, hz0), ux)
    c10 = torch.lerp(corner(hx0, hy1, hz0), corner(hx1, hy1, hz0), ux)
    c01 = torch.lerp(corner(hx0, hy0, hz1), corner(hx1, hy0, hz1), ux)
    c11 = torch.lerp(corner(hx0, hy1, hz1), corner(hx1, hy1, hz1), ux)
    return torch.lerp(torch.lerp(c00, c10, uy), torch.lerp(c01, c11, uy), uz)


def _fbm(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, seed: torch.Tensor, octaves: int) -> torch.Tensor:
    """Fractal sum of value noise, normalised to [0, 1]."""
    total = torch.zeros_like(x)
    amp, norm, scale = 1.0, 0.0, 1.0
    for octave in range(octaves):
        total = total + amp * value_noise(x * scale, y * scale, z * scale, seed + 1013 * octave)
        norm += amp
        amp *= 0.5
        scale *= 2.03
    return total / norm


def _smoothstep(e0: float | torch.Tensor, e1: float | torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    t = ((v - e0) / (e1 - e0)).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _srgb_to_linear(c: torch.Tensor) -> torch.Tensor:
    return torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(c: torch.Tensor) -> torch.Tensor:
    c = c.clamp(0.0, 1.0)
    return torch.where(c <= 0.0031308, 12.92 * c, 1.055 * c.clamp_min(1e-8) ** (1.0 / 2.4) - 0.055)


class _Texture:
    """Evaluates noise at the hit points, mirrored (at |x|) and/or plain, blended by ``asymmetry``."""

    def __init__(self, p: Coords, asymmetry: torch.Tensor, seed: torch.Tensor) -> None:
        self.p = p
        self.a = asymmetry
        self.seed = seed
        self.need_plain = bool((asymmetry > 0).any())
        self.need_mirror = bool((asymmetry < 1).any())

    def __call__(self, fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        x, y, z = self.p
        if not self.need_mirror:
            return fn(x, y, z)
        mirrored = fn(x.abs(), y, z)
        if not self.need_plain:
            return mirrored
        return torch.lerp(mirrored, fn(x, y, z), self.a)


def head_albedo(p: Coords, params: HeadParams, g: Geometry, parts: SdfParts) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear-RGB albedo (K, 3) and specular ``(weight, exponent)`` (K, 2) at surface points.

    ``params`` and ``g`` hold one row per point (or a single row for all points); ``parts`` are the material
    fields at the points.
    """
    p = to_local(p, g)
    x, y, z = p
    ax = x.abs()
    k = x.shape[0]
    seed = params.texture_seed.to(torch.int64)
    tex = _Texture(p, params.asymmetry, seed)

    # ---- skin
    skin = _srgb_to_linear(params.skin_color).expand(k, 3)
    st = params.skin_texture
    mottle = tex(lambda a, b, c: _fbm(a * 22.0, b * 22.0, c * 22.0, seed + 11, 2)) - 0.5
    pores = tex(lambda a, b, c: value_noise(a * 260.0, b * 260.0, c * 260.0, seed + 23)) - 0.5
    tone = 1.0 + st * (0.22 * mottle + 0.22 * pores)
    skin = skin * tone[:, None]
    skin = skin * torch.stack((1.0 + 0.08 * st * mottle, 1.0 - 0.02 * st * mottle, 1.0 - 0.04 * st * mottle), dim=-1)
    # Freckles over the nose and cheeks.
    spots = tex(lambda a, b, c: value_noise(a * 150.0, b * 150.0, c * 150.0, seed + 37))
    threshold = 0.93 - 0.2 * params.freckles
    region = torch.exp(-(((ax - 0.035) / 0.06) ** 2) - ((y - g.eye_y + 0.035) / 0.035) ** 2) * (z > 0.2)
    freckle = _smoothstep(threshold, threshold + 0.04, spots) * region * (params.freckles > 0.02)
    skin = torch.lerp(skin, skin * torch.tensor([0.72, 0.55, 0.42], device=skin.device), freckle[:, None])
    # Blush on the cheeks.
    cheek = torch.exp(-(((ax - 0.078) / 0.03) ** 2) - ((y - g.eye_y + 0.05) / 0.03) ** 2) * (z > 0.18)
    redden = (0.35 * params.blush * cheek)[:, None]
    skin = torch.lerp(skin, skin * torch.tensor([1.05, 0.72, 0.72], device=skin.device), redden)
    # Lips.
    lip_w = 1.0 - _smoothstep(0.0005, 0.003, parts.lips - parts.skin)
    lip_w = lip_w * (z > 0.25)
    red = params.lip_redness[:, None]
    lip_col = skin * torch.lerp(
        torch.tensor([0.85, 0.65, 0.62], device=skin.device), torch.tensor([0.78, 0.38, 0.40], device=skin.device), red
    )
    skin = torch.lerp(skin, lip_col, lip_w[:, None])

    # ---- hair colour (used for the eyebrows too)
    hair_base = _srgb_to_linear(params.hair_color).expand(k, 3)
    # Eyebrows: an arched band above each eye, made of short strands.
    bx = (ax - g.eye_x) / 0.04  # -1 above the inner eye corner, +1 above the outer one
    arch = g.eye_y + 0.036 + 0.008 * (1.0 - bx * bx) - 0.003 * bx
    half_width = 0.0085 * params.eyebrow_thickness * (1.0 - 0.4 * bx.clamp(-1.0, 1.0))
    across = 1.0 - _smoothstep(0.6, 1.0, (y - arch).abs() / half_width)
    along = _smoothstep(-1.05, -0.8, bx) * (1.0 - _smoothstep(0.75, 1.0, bx))
    band = across * along * (z > 0.22)
    brow_strands = tex(lambda a, b, c: value_noise(a * 300.0, b * 120.0, c * 60.0, seed + 53))
    brow_w = band * (0.55 + 0.45 * params.eyebrow_darkness) * (0.75 + 0.25 * brow_strands)
    skin = torch.lerp(skin, hair_base * 0.4, brow_w.clamp(0.0, 1.0)[:, None])

    # ---- hair: strands combed back (lines of constant angle around the z axis), or falling away from the
    # parting (lines of constant z, running around the parting axis); mixed by |parting|.
    part = params.parting
    part_x = 0.045 * part

    # Across the strands the noise is fine (both the angle/position across and the distance from the axis the
    # hair flows around), along them it is coarse.
    def combed(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        theta = torch.atan2(a, b + 0.02) * 0.2
        radius = torch.sqrt(a * a + (b + 0.02) ** 2)
        return _fbm(theta * 320.0, c * 28.0, radius * 320.0, seed + 71, 2)

    strands_back = tex(combed)
    angle = torch.atan2(x - part_x, y + 0.05) * 0.2
    radius = torch.sqrt((x - part_x) ** 2 + (y + 0.05) ** 2)
    strands_part = _fbm(z * 320.0, angle * 28.0, radius * 320.0, seed + 89, 2)
    mix = part.abs() * _smoothstep(-0.02, 0.08, y)
    strands = torch.lerp(strands_back, strands_part, mix)
    ht = params.hair_texture
    hair = hair_base * (1.0 + 1.3 * ht * (strands - 0.5))[:, None]
    scalp = torch.exp(-(((x - part_x) / 0.0035) ** 2)) * _smoothstep(0.12, 0.2, y) * part.abs() * (z > -0.04)
    hair = torch.lerp(hair, skin, (0.7 * scalp)[:, None])

    # ---- eyes: pupil, striated iris with a dark rim, sclera; looking along +z.
    vx, vy = (ax - g.eye_x) / g.eye_r, (y - g.eye_y) / g.eye_r  # the two eyes are mirror images
    rho = torch.sqrt(vx * vx + vy * vy)
    iris_col = _srgb_to_linear(params.eye_color).expand(k, 3)
    # Radial striations: noise on the direction around the pupil (no seam) and coarsely on the radius.
    inv = 3.0 / rho.clamp_min(1e-6)
    stripes = value_noise(vx * inv, vy * inv, rho * 6.0, seed + 97)
    iris_col = iris_col * (0.6 + 0.8 * stripes)[:, None] * (1.0 - 0.5 * _smoothstep(0.36, 0.47, rho))[:, None]
    sclera = torch.tensor([0.72, 0.66, 0.62], device=x.device).expand(k, 3)
    sclera = sclera * (1.0 - 0.25 * _smoothstep(0.6, 1.0, rho))[:, None]
    eye = torch.lerp(iris_col, sclera, _smoothstep(0.45, 0.49, rho)[:, None])
    eye = torch.lerp(torch.full_like(eye, 0.01), eye, _smoothstep(0.17, 0.21, rho)[:, None])

    # ---- combine materials
    rest = torch.minimum(parts.skin, parts.eyes)
    w_hair = ((rest - parts.hair) / 0.004 + 0.5).clamp(0.0, 1.0)
    w_eye = ((torch.minimum(parts.skin, parts.hair) - parts.eyes) / 0.002 + 0.5).clamp(0.0, 1.0)
    albedo = torch.lerp(skin, hair, w_hair[:, None])
    albedo = torch.lerp(albedo, eye, w_eye[:, None])
    # Specular weight and exponent: skin, then lips, hair (broad sheen) and eyes (sharp catch-light).
    spec = torch.lerp(
        torch.lerp(0.03 + 0.07 * lip_w, torch.full_like(lip_w, 0.035), w_hair), torch.full_like(lip_w, 0.8), w_eye
    )
    power = torch.lerp(
        torch.lerp(torch.full_like(lip_w, 40.0), torch.full_like(lip_w, 12.0), w_hair),
        torch.full_like(lip_w, 250.0),
        w_eye,
    )
    return albedo, torch.stack((spec, power), dim=-1)


def _shade(points: torch.Tensor, dirs: torch.Tensor, params: HeadParams, geo: Geometry) -> torch.Tensor:
    """sRGB colour in [0, 1] (K, 3) of surface points seen along ``dirs``."""
    p = (points[:, 0], points[:, 1], points[:, 2])
    parts = head_parts(p, geo)
    normals = _normals(points, geo)
    ao = _occlusion(points, normals, geo)
    albedo, specular = head_albedo(p, params, geo, parts)
    light = torch.tensor(_LIGHT, device=points.device)
    light = light / light.norm()
    ndl = normals @ light
    diffuse = ((ndl + 0.25) / 1.25).clamp_min(0.0)  # slightly wrapped Lambert (softer skin terminator)
    sky = 0.5 + 0.5 * normals[:, 1]
    ambient = 0.18 + 0.22 * sky
    half = F.normalize(light - dirs, dim=-1)
    nh = (normals * half).sum(-1).clamp_min(0.0)
    spec = specular[:, 0] * nh.pow(specular[:, 1]) * (ndl > 0)
    lit = albedo * (0.85 * diffuse * ao.sqrt() + ambient * ao)[:, None] + spec[:, None]
    return _linear_to_srgb(lit)


# ------------------------------------------------------------------------------------------------------------
# Landmarks


def head_landmarks(params: HeadParams, max_steps: int = 48) -> torch.Tensor:
    """(B, 5, 3) surface landmarks (order :data:`LANDMARK_NAMES`), view-independent.

    Each landmark is where a ray along world -z, through the anatomical ``(x, y)`` of the feature (pupil
    centre, nose tip, mouth corner), first meets the surface.
    """
    geo = head_geometry(params)
    b = len(params)
    zeros = torch.zeros(b, device=params.device)
    xs = torch.stack((-geo.eye_x, geo.eye_x, zeros, -geo.mouth_rx, geo.mouth_rx), dim=1)
    ys = torch.stack((geo.eye_y, geo.eye_y, geo.tip_y, geo.mouth_y, geo.mouth_y), dim=1)
    wx, wy, _ = to_world((xs, ys, ys), Geometry(geo.matrix[:, :, None], geo.names))
    origins = torch.stack((wx, wy, torch.full_like(xs, 0.6)), dim=-1).reshape(-1, 3)
    dirs = torch.tensor([0.0, 0.0, -1.0], device=params.device).expand_as(origins).contiguous()
    index = torch.arange(b, device=params.device).repeat_interleave(5)
    footprint = torch.full((b * 5,), 1e-3, device=params.device)
    t, _ = _trace(origins, dirs, geo, index, footprint, max_steps)
    return (origins + t[:, None] * dirs).reshape(b, 5, 3)


# ------------------------------------------------------------------------------------------------------------
# Rendering


def _broadcast_params(params: HeadParams, batch: int) -> HeadParams:
    if len(params) == batch:
        return params
    if len(params) == 1:
        return HeadParams(params.vector.expand(batch, -1))
    raise ConfigError(f"got {len(params)} identities for {batch} cameras; pass one identity or one per camera")


@torch.no_grad()
def render_heads(
    params: HeadParams,
    cameras: torch.Tensor,
    resolution: int = 128,
    *,
    background: float | Sequence[float] = -1.0,
    background_depth: float = RAY_END,
    max_steps: int = 128,
) -> SynthSample:
    """Render identities from EG3D cameras by sphere tracing, with ground truth.

    Args:
        params: B identities, or one identity for all cameras.
        cameras: (B, 25) EG3D labels (or (25,) for one camera).
        resolution: image side R.
        background: background colour in [-1, 1], a number (grey level) or an RGB triple.
        background_depth: depth stored for background pixels.
        max_steps: most sphere-tracing steps per ray; rays stop as soon as they converge, so only the few
            grazing rays use many (fewer steps leave pin-holes in creases at high resolution).

    Returns:
        :class:`SynthSample` (conventions in the module docstring).

    Speed (CPU, one thread): ~0.08 s per 128² image in batches of 16, ~1.2 s per 512² image. The tracer runs
    hundreds of small element-wise ops per step; on a busy or small CPU ``torch.set_num_threads(1)`` is often
    faster and much steadier than several threads.
    """
    cameras = torch.as_tensor(cameras, dtype=torch.float32)
    if cameras.dim() == 1:
        cameras = cameras.unsqueeze(0)
    cam.validate_label(cameras, "cameras")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ConfigError(f"resolution must be a positive integer, got {resolution!r}")
    if max_steps < 1:
        raise ConfigError(f"max_steps must be at least 1, got {max_steps}")
    cameras = cameras.to(params.device)
    b = cameras.shape[0]
    params = _broadcast_params(params, b)
    bg = torch.as_tensor(background, dtype=torch.float32, device=params.device).reshape(-1)
    if bg.numel() not in (1, 3):
        raise ConfigError(f"background must be a number or an RGB triple, got {bg.numel()} values")
    bg = bg.expand(3)

    cam2world, intrinsics = split_label(cameras)
    origins, dirs = generate_rays(cam2world, intrinsics, resolution)
    m = resolution * resolution
    origins, dirs = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    index = torch.arange(b, device=params.device).repeat_interleave(m)
    focal = torch.minimum(intrinsics[:, 0, 0], intrinsics[:, 1, 1])
    footprint = (1.0 / (focal * resolution)).repeat_interleave(m)
    geo = head_geometry(params)

    depth = torch.full((b * m,), float(background_depth), device=params.device)
    mask = torch.zeros(b * m, device=params.device)
    colour = bg.expand(b * m, 3).clone()
    for start in range(0, b * m, _MAX_CHUNK):
        sl = slice(start, min(start + _MAX_CHUNK, b * m))
        t, hit = _trace(origins[sl], dirs[sl], geo, index[sl], footprint[sl], max_steps)
        hits = hit.nonzero().squeeze(1)
        if hits.numel() == 0:
            continue
        rows = hits + start
        points = origins[rows] + t[hits, None] * dirs[rows]
        point_index = index[rows]
        rgb = _shade(points, dirs[rows], HeadParams(params.vector[point_index]), geo.gather(point_index))
        colour[rows] = rgb * 2.0 - 1.0
        depth[rows] = t[hits]
        mask[rows] = 1.0

    landmarks_3d = head_landmarks(params)
    landmarks_2d, distance = project_points(landmarks_3d, cameras, resolution)
    visible = _landmark_visibility(landmarks_3d, landmarks_2d, distance, cameras, geo, resolution)
    r = resolution
    return SynthSample(
        image=colour.reshape(b, r, r, 3).permute(0, 3, 1, 2).contiguous(),
        depth=depth.reshape(b, 1, r, r),
        mask=mask.reshape(b, 1, r, r),
        landmarks_2d=landmarks_2d,
        landmarks_3d=landmarks_3d,
        landmarks_visible=visible,
        cameras=cameras,
        params=params,
    )


def _landmark_visibility(
    points: torch.Tensor,
    pixels: torch.Tensor,
    distance: torch.Tensor,
    cameras: torch.Tensor,
    geo: Geometry,
    resolution: int,
) -> torch.Tensor:
    """(B, 5) bool: the landmark projects into the image and the camera ray to it reaches it first."""
    b, n = points.shape[:2]
    centre = cameras.reshape(b, 25)[:, [3, 7, 11]]
    origins = centre[:, None, :].expand(b, n, 3).reshape(-1, 3)
    dirs = F.normalize(points.reshape(-1, 3) - origins, dim=-1)
    index = torch.arange(b, device=points.device).repeat_interleave(n)
    footprint = torch.full((b * n,), 1e-3, device=points.device)
    t, hit = _trace(origins, dirs, geo, index, footprint, 96)
    reached = hit & ((t - distance.reshape(-1)).abs() < 0.006)
    inside = ((pixels >= 0) & (pixels <= resolution)).all(dim=-1)
    return reached.reshape(b, n) & inside


# ------------------------------------------------------------------------------------------------------------
# Mesh


@torch.no_grad()
def head_mesh(params: HeadParams, resolution: int = 128, with_colors: bool = True, chunk: int = 1 << 18) -> Mesh:
    """Closed triangle mesh of one identity by marching cubes on the field over the tri-plane cube.

    Args:
        params: exactly one identity.
        resolution: grid side N over ``[-0.5, 0.5]^3`` (voxel = 1 / (N - 1)).
        with_colors: attach sRGB albedo as uint8 vertex colours.

    Returns:
        :class:`triplanenet.io.mesh.Mesh` in world units, watertight, faces counter-clockwise from outside.
    """
    from skimage import measure

    from triplanenet.eg3d.shapes import grid_coordinates

    if len(params) != 1:
        raise ConfigError(f"head_mesh takes one identity, got {len(params)}; index the batch with params[i]")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 8:
        raise ConfigError(f"mesh resolution must be an integer >= 8, got {resolution!r}")
    geo = head_geometry(params)
    coords = grid_coordinates(resolution, 1.0, device=params.device)
    values = torch.cat([_field(coords[s : s + chunk], geo) for s in range(0, len(coords), chunk)])
    grid = values.reshape(resolution, resolution, resolution).cpu().numpy()  # [x, y, z], negative inside
    # The head is clipped just inside the cube, so the grid border is outside and the surface is closed; the
    # field grows outwards, for which skimage's "descent" winds the faces counter-clockwise seen from outside.
    vertices, faces, _, _ = measure.marching_cubes(grid, level=0.0, gradient_direction="descent")
    vertices = vertices * (1.0 / (resolution - 1)) - 0.5
    mesh = Mesh(vertices=vertices.astype(np.float32), faces=faces.astype(np.int64))
    if with_colors and len(mesh.vertices):
        verts = torch.from_numpy(mesh.vertices).to(params.device)
        colours = []
        for s in range(0, len(verts), chunk):
            v = verts[s : s + chunk]
            p = (v[:, 0], v[:, 1], v[:, 2])
            parts = head_parts(p, geo)
            albedo, _ = head_albedo(p, params, geo, parts)
            colours.append(_linear_to_srgb(albedo))
        mesh.colors = (torch.cat(colours) * 255).round().to(torch.uint8).cpu().numpy()
    return mesh


def _as_numpy_image(image: torch.Tensor) -> np.ndarray:
    """(3, R, R) in [-1, 1] -> (R, R, 3) uint8 (for previews)."""
    return ((image.permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
