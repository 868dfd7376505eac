"""Signed distance field of the procedural head, built from smooth-union primitives.

World frame: EG3D's (y up, the face looks towards +z, left/right is ±x, units of the tri-plane cube
``[-0.5, 0.5]^3``). Each head is modelled in a canonical frame (pupils at ``y ≈ 0.02``, ``z ≈ 0.29``, 0.13
apart; nose tip at ``z ≈ 0.36``; crown near ``y ≈ 0.3``; neck running out of the bottom of the cube) and scaled
by ``GLOBAL_SCALE · scale`` about :data:`SCALE_ANCHOR` into the world. At the FFHQ frontal camera (radius 2.7,
focal 4.2647) it frames like an FFHQ-aligned face: eyes about a quarter of the image apart at ~46% height,
mouth at ~72%, head and hair spanning the middle ~60-70% of the width.

Parts: ellipsoid cranium, jaw, mid-face, jowls, chin, cheekbones, muzzle and brow; eye sockets carved around
spherical eyeballs with almond-shaped lids; nose from a tapered bridge, a base, a tip, wings and carved nostrils;
two lips and a carved mouth slit; ears (turned out by ``ear_protrusion``, with a carved bowl); a neck; hair as a
shell over the skull (thicker away from the hairline and on the side opposite the parting, with a groove along
the parting), optional hair down the back, cut by the face opening and the nape.

Evaluation is point-wise and vectorised: coordinates come as three flat tensors ``x, y, z`` of shape (K,)
and the per-identity geometry as a :class:`Geometry` whose rows are (K,) tensors (one value per point,
gathered from the identity each point belongs to) or (1,) tensors (one identity for every point). Negative
values are inside. The field is a bound, not an exact distance (ellipsoids and smooth unions), with a
Lipschitz constant slightly above 1 near the surface; sphere tracing steps are scaled by :data:`STEP_SCALE`.

Bilateral parts (eyes, ears, cheeks, nostrils, ...) are evaluated at ``|x|``, so with ``parting = 0`` the field
is exactly mirror symmetric about ``x = 0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from triplanenet.synth.params import HeadParams

__all__ = [
    "BOX_HALF",
    "GLOBAL_SCALE",
    "SCALE_ANCHOR",
    "STEP_SCALE",
    "Geometry",
    "SdfParts",
    "head_geometry",
    "head_parts",
    "head_sdf",
    "sdf_points",
    "smax",
    "smin",
    "to_local",
    "to_world",
]

BOX_HALF: float = 0.49
"""The head is clipped to the cube ``[-BOX_HALF, BOX_HALF]^3`` (just inside the tri-plane cube)."""
GLOBAL_SCALE: float = 1.04
"""Size of the canonical head relative to the modelling units below (tunes the framing at FFHQ cameras)."""
SCALE_ANCHOR: tuple[float, float, float] = (0.0, 0.02, 0.1)
"""Fixed point of the head scale (between the eyes, inside the head)."""
STEP_SCALE: float = 0.8
"""Fraction of the field value used as a sphere-tracing step (the field over-estimates distance slightly)."""

Num = torch.Tensor | float
Coords = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""Point coordinates ``(x, y, z)``, each a flat tensor."""
Triple = tuple[Num, Num, Num]
"""Centre or radii of a primitive: tensors that broadcast against the coordinates, or plain numbers."""


# ------------------------------------------------------------------------------------------------------------
# Primitives (all take and return flat tensors that broadcast against each other)


def smin(a: torch.Tensor, b: torch.Tensor, k: Num) -> torch.Tensor:
    """Polynomial smooth minimum (union) with blend radius ``k`` (> 0)."""
    h = (0.5 + 0.5 * (b - a) / k).clamp(0.0, 1.0)
    return torch.lerp(b, a, h) - k * h * (1.0 - h)


def smax(a: torch.Tensor, b: torch.Tensor, k: Num) -> torch.Tensor:
    """Polynomial smooth maximum (intersection; ``smax(a, -b)`` subtracts ``b``)."""
    return -smin(-a, -b, k)


def _length(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(x * x + y * y + z * z)


def sd_sphere(p: Coords, c: Triple, r: Num) -> torch.Tensor:
    """Exact distance to a sphere of centre ``c`` and radius ``r``."""
    return _length(p[0] - c[0], p[1] - c[1], p[2] - c[2]) - r


def sd_ellipsoid(p: Coords, c: Triple, r: Triple) -> torch.Tensor:
    """Distance bound to an axis-aligned ellipsoid (``k0 (k0 - 1) / k1`` approximation)."""
    qx, qy, qz = (p[0] - c[0]) / r[0], (p[1] - c[1]) / r[1], (p[2] - c[2]) / r[2]
    k0 = _length(qx, qy, qz)
    k1 = _length(qx / r[0], qy / r[1], qz / r[2]).clamp_min(1e-9)
    return k0 * (k0 - 1.0) / k1


def sd_round_cone(p: Coords, a: Triple, b: Triple, ra: Num, rb: Num) -> torch.Tensor:
    """Distance bound to a capsule from ``a`` (radius ``ra``) to ``b`` (radius ``rb``), radius linear in between."""
    bax, bay, baz = b[0] - a[0], b[1] - a[1], b[2] - a[2]
    pax, pay, paz = p[0] - a[0], p[1] - a[1], p[2] - a[2]
    h = ((pax * bax + pay * bay + paz * baz) / (bax * bax + bay * bay + baz * baz)).clamp(0.0, 1.0)
    return _length(pax - bax * h, pay - bay * h, paz - baz * h) - (ra + (rb - ra) * h)


def _smoothstep(e0: float, e1: float, v: torch.Tensor) -> torch.Tensor:
    t = ((v - e0) / (e1 - e0)).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


# ------------------------------------------------------------------------------------------------------------
# Per-identity geometry


class Geometry:
    """Derived per-identity numbers (centres, radii) as rows of a (G, N) matrix.

    ``N`` is either the number of identities (rows of shape (N,)) or the number of points after
    :meth:`gather` (one value per point). Rows are read as attributes: ``geo.eye_x``.
    """

    def __init__(self, matrix: torch.Tensor, names: dict[str, int]) -> None:
        self.matrix = matrix
        self.names = names

    def __getattr__(self, name: str) -> torch.Tensor:
        names = self.__dict__["names"]
        if name not in names:
            raise AttributeError(f"Geometry has no row {name!r}")
        return self.__dict__["matrix"][names[name]]

    def gather(self, index: torch.Tensor) -> Geometry:
        """Geometry with one column per entry of ``index`` (identity index of each point)."""
        return Geometry(self.matrix[:, index], self.names)

    def __len__(self) -> int:
        return self.matrix.shape[1]


def head_geometry(params: HeadParams) -> Geometry:
    """Centres, radii and blend sizes of every primitive, for each identity (columns)."""
    p = params
    rows: dict[str, torch.Tensor] = {}

    def put(name: str, value: torch.Tensor | float) -> None:
        rows[name] = torch.as_tensor(value, dtype=torch.float32, device=p.device).expand(len(p))

    sw, sh, sd = p.head_width, p.head_height, p.head_depth
    put("scale", GLOBAL_SCALE * p.scale)
    # Cranium.
    put("cr_y", 0.075)
    put("cr_z", 0.085)
    put("cr_rx", 0.150 * sw)
    put("cr_ry", 0.185 * sh)
    put("cr_rz", 0.200 * sd)
    # Jaw and chin.
    cl = p.chin_length
    put("jaw_y", -0.095 - 0.01 * (cl - 1.0))
    put("jaw_z", 0.150)
    put("jaw_rx", 0.110 * p.jaw_width)
    put("jaw_ry", 0.112 * cl)
    put("jaw_rz", 0.150)
    put("chin_y", -0.095 - 0.072 * cl)
    put("chin_z", 0.282 + 0.014 * p.chin_protrusion)
    put("chin_r", 0.034)
    # Mid-face and cheekbones.
    fw = p.face_width
    put("face_rx", 0.124 * fw)
    put("jowl_x", 0.066 * fw)
    cb = 0.8 + 0.4 * p.cheekbones
    put("cheek_x", 0.080 * fw)
    put("cheek_rx", 0.044 * cb)
    put("cheek_ry", 0.032 * cb)
    put("cheek_rz", 0.050 * cb)
    # Eyes, sockets, lids and brows.
    r_e = 0.0235 * p.eye_size
    eye_y = 0.022 + 0.008 * p.eye_height
    put("eye_x", 0.066 * p.eye_spacing)
    put("eye_y", eye_y)
    put("eye_z", 0.292 - r_e)
    put("eye_r", r_e)
    put("lid_y", eye_y + r_e * (0.3 + 0.3 * p.eye_openness))
    put("brow_y", eye_y + 0.042)
    put("brow_r", 0.018 + 0.008 * p.brow_ridge)
    # Nose.
    nl, npr, nw = p.nose_length, p.nose_protrusion, p.nose_width
    tip_y = eye_y - 0.070 * nl
    tip_z = 0.292 + 0.056 * npr
    put("tip_y", tip_y)
    put("tip_z", tip_z)
    put("tip_r", 0.016 * p.nose_tip_size)
    put("bridge_y", eye_y + 0.01)
    put("bridge_z", 0.296 + 0.012 * p.nose_bridge)
    put("ala_x", 0.0185 * nw)
    put("ala_r", 0.012 * nw.sqrt())
    put("nostril_x", 0.0105 * nw)
    # Mouth.
    mw, lf = p.mouth_width, p.lip_fullness
    mouth_y = -0.112 + 0.008 * p.mouth_height
    put("mouth_y", mouth_y)
    put("mouth_rx", 0.034 * mw)
    put("lip_f", lf)
    # Ears.
    es = p.ear_size
    put("ear_x", 0.150 * sw + 0.004 + 0.006 * p.ear_protrusion)
    put("ear_y", eye_y - 0.022)
    put("ear_ry", 0.040 * es)
    put("ear_rz", 0.024 * es)
    angle = 0.15 + 0.45 * p.ear_protrusion
    put("ear_cos", torch.cos(angle))
    put("ear_sin", torch.sin(angle))
    # Neck.
    put("neck_r", 0.100 * p.neck_width)
    # Hair.
    t = 0.010 + 0.040 * p.hair_volume
    put("hair_t", t)
    put("hair_len", p.hair_length)
    put("hairline", p.hairline)
    put("parting", p.parting)
    matrix = torch.stack(list(rows.values()))
    return Geometry(matrix, {name: i for i, name in enumerate(rows)})


# ------------------------------------------------------------------------------------------------------------
# The field


def to_local(p: Coords, g: Geometry) -> Coords:
    """World coordinates -> the head's canonical frame (undoes the per-identity and global scale)."""
    inv = 1.0 / g.scale
    return (
        p[0] * inv,
        (p[1] - SCALE_ANCHOR[1]) * inv + SCALE_ANCHOR[1],
        (p[2] - SCALE_ANCHOR[2]) * inv + SCALE_ANCHOR[2],
    )


def to_world(p: Coords, g: Geometry) -> Coords:
    """The head's canonical frame -> world coordinates (inverse of :func:`to_local`)."""
    s = g.scale
    return (p[0] * s, (p[1] - SCALE_ANCHOR[1]) * s + SCALE_ANCHOR[1], (p[2] - SCALE_ANCHOR[2]) * s + SCALE_ANCHOR[2])


@dataclass
class SdfParts:
    """Field values of the head's materials at the same points (all (K,), negative inside).

    ``total`` is the full clipped head; ``skin`` everything but hair and eyeballs; ``hair`` and ``eyes`` the
    hair volume and eyeballs alone; ``lips`` the two lips before they are blended into the face.
    """

    total: torch.Tensor
    skin: torch.Tensor
    hair: torch.Tensor
    eyes: torch.Tensor
    lips: torch.Tensor


def head_sdf(p: Coords, g: Geometry) -> torch.Tensor:
    """Signed distance bound of the head at world points ``p = (x, y, z)`` (each (K,)); negative inside.

    Args:
        p: world coordinates, three (K,) tensors.
        g: geometry with (K,) rows (gathered per point) or (1,) rows (one identity for all points).

    Returns:
        (K,) field values in world units, the head clipped to ``[-BOX_HALF, BOX_HALF]^3``.
    """
    return head_parts(p, g).total


def head_parts(p: Coords, g: Geometry) -> SdfParts:
    """The head's field and its per-material fields at world points (see :class:`SdfParts`)."""
    world = p
    p = to_local(p, g)
    x, y, z = p
    ax = x.abs()  # bilateral parts use the mirrored coordinate
    pa = (ax, y, z)

    # Skull, jaw, chin, cheeks.
    head = sd_ellipsoid(p, (0.0, g.cr_y, g.cr_z), (g.cr_rx, g.cr_ry, g.cr_rz))
    jaw = sd_ellipsoid(p, (0.0, g.jaw_y, g.jaw_z), (g.jaw_rx, g.jaw_ry, g.jaw_rz))
    head = smin(head, jaw, 0.05)
    midface = sd_ellipsoid(p, (0.0, g.eye_y - 0.05, 0.185), (g.face_rx, 0.085, 0.125))
    head = smin(head, midface, 0.04)
    jowl = sd_ellipsoid(pa, (g.jowl_x, g.eye_y - 0.075, 0.19), (0.05, 0.065, 0.07))
    head = smin(head, jowl, 0.04)
    chin = sd_ellipsoid(p, (0.0, g.chin_y, g.chin_z), (g.chin_r * 1.25, g.chin_r, g.chin_r))
    head = smin(head, chin, 0.04)
    cheek = sd_ellipsoid(pa, (g.cheek_x, g.eye_y - 0.032, 0.238), (g.cheek_rx, g.cheek_ry, g.cheek_rz))
    head = smin(head, cheek, 0.03)
    muzzle = sd_ellipsoid(p, (0.0, g.mouth_y + 0.014, 0.268), (0.056, 0.06, 0.06))
    head = smin(head, muzzle, 0.03)
    brow = sd_ellipsoid(pa, (0.034, g.brow_y, 0.272), (0.058, g.brow_r, 0.033))
    head = smin(head, brow, 0.035)
    # Eye sockets, hugging the eyeballs.
    eye_c = (g.eye_x, g.eye_y, g.eye_z)
    socket = sd_sphere(pa, eye_c, g.eye_r * 1.03)
    head = smax(head, -socket, 0.006)
    # Nose: bridge, lower body, tip, wings, nostrils.
    nose = sd_round_cone(
        p, (0.0, g.bridge_y, g.bridge_z), (0.0, g.tip_y + 0.006, g.tip_z - 0.01), 0.0085, g.tip_r * 0.85
    )
    base = sd_ellipsoid(p, (0.0, g.tip_y + 0.002, g.tip_z - 0.03), (g.ala_x * 1.25, 0.02, 0.024))
    nose = smin(nose, base, 0.012)
    tip = sd_sphere(p, (0.0, g.tip_y, g.tip_z), g.tip_r)
    nose = smin(nose, tip, 0.01)
    ala = sd_sphere(pa, (g.ala_x, g.tip_y - 0.004, g.tip_z - 0.025), g.ala_r)
    nose = smin(nose, ala, 0.008)
    nostril = sd_ellipsoid(pa, (g.nostril_x, g.tip_y - 0.0135, g.tip_z - 0.015), (0.0065, 0.0035, 0.009))
    head = smin(head, nose, 0.014)
    head = smax(head, -nostril, 0.003)
    # Lips and the mouth slit.
    lf = g.lip_f
    upper = sd_ellipsoid(p, (0.0, g.mouth_y + 0.0085 * lf, 0.318), (g.mouth_rx, 0.0095 * lf, 0.018 * lf))
    lower = sd_ellipsoid(p, (0.0, g.mouth_y - 0.0105 * lf, 0.313), (g.mouth_rx * 0.88, 0.011 * lf, 0.019 * lf))
    lips = smin(upper, lower, 0.004)
    head = smin(head, lips, 0.006)
    # The slit: a thin slab bounded by an ellipse in the xz plane (exact-ish, unlike a flat ellipsoid).
    qx, qz = x / (g.mouth_rx * 1.02), (z - 0.33) / 0.026
    k0 = torch.sqrt(qx * qx + qz * qz)
    k1 = torch.sqrt((qx / (g.mouth_rx * 1.02)) ** 2 + (qz / 0.026) ** 2).clamp_min(1e-9)
    ellipse = (k0 * (k0 - 1.0) / k1).clamp_min(0.0)
    slit = torch.sqrt(ellipse * ellipse + (y - g.mouth_y) ** 2) - 0.0014
    head = smax(head, -slit, 0.002)
    # Ears: a thin ellipsoid turned out by the protrusion angle, with the bowl carved in.
    dx, dz = ax - g.ear_x, z - 0.068
    ex = dx * g.ear_cos + dz * g.ear_sin
    ez = -dx * g.ear_sin + dz * g.ear_cos
    dy = y - g.ear_y
    ez = ez + 0.25 * dy  # lean the ear back
    ear_local = (ex, dy, ez)
    ear = sd_ellipsoid(ear_local, (0.0, 0.0, 0.0), (0.011, g.ear_ry, g.ear_rz))
    bowl = sd_ellipsoid(ear_local, (0.009, -0.004, 0.002), (0.0075, g.ear_ry * 0.55, g.ear_rz * 0.55))
    ear = smax(ear, -bowl, 0.003)
    head = smin(head, ear, 0.008)
    # Neck.
    neck = sd_round_cone(p, (0.0, -0.10, 0.025), (0.0, -0.65, -0.03), g.neck_r, g.neck_r)
    head = smin(head, neck, 0.035)
    # Eyelids: shells around the eyeballs above an arched upper edge and below a flatter lower edge.
    ex2 = (ax - g.eye_x) ** 2 / g.eye_r
    lid_up = smax(sd_sphere(pa, eye_c, g.eye_r * 1.1), ((g.lid_y - 0.55 * ex2) - y) / 1.3, 0.002)
    lid_low = smax(sd_sphere(pa, eye_c, g.eye_r * 1.06), (y - (g.eye_y - 0.55 * g.eye_r + 0.3 * ex2)) / 1.15, 0.002)
    head = smin(head, torch.minimum(lid_up, lid_low), 0.003)
    eyes = sd_sphere(pa, eye_c, g.eye_r)
    hair = _hair_sdf(p, g)

    skin = head
    total = torch.minimum(smin(skin, hair, 0.004), eyes)
    # Back to world units (the field scales with the head), then clip to the cube.
    scale = g.scale
    total, skin, hair, eyes, lips = (v * scale for v in (total, skin, hair, eyes, lips))
    wx, wy, wz = world
    box = torch.maximum(torch.maximum(wx.abs(), wy.abs()), wz.abs()) - BOX_HALF
    total = torch.maximum(total, box)
    return SdfParts(total=total, skin=skin, hair=hair, eyes=eyes, lips=lips)


def _hair_sdf(p: Coords, g: Geometry) -> torch.Tensor:
    """Hair volume: a shell over the skull (thicker on the swept side), cut by the hairline and the nape."""
    x, y, z = p
    t = g.hair_t
    # Face opening: an ellipsoid in front of the face removes the hair there; the hairline field moves it.
    face_cut = sd_ellipsoid(p, (0.0, -0.13, 0.30), (0.205, 0.265 + 0.035 * g.hairline, 0.30))
    # A shell over the skull whose thickness ramps up over the first few centimetres behind the hairline.
    base = 0.006
    shell = sd_ellipsoid(p, (0.0, g.cr_y + 0.006, g.cr_z - 0.006), (g.cr_rx + base, g.cr_ry + base, g.cr_rz + base))
    ramp = 0.3 + 0.7 * _smoothstep(0.0, 0.05, face_cut)
    shell = shell - (t - base) * ramp
    # Hair swept away from the parting: thicker on the side opposite to it.
    shell = shell + 0.45 * t * g.parting * torch.tanh(x / 0.06)
    # Hair hanging down the back of the head.
    length = g.hair_len
    back = sd_ellipsoid(
        p,
        (0.0, g.cr_y - 0.07 - 0.13 * length, g.cr_z - 0.05),
        (g.cr_rx + 0.6 * t, 0.15 + 0.12 * length, g.cr_rz * 0.78 + 0.5 * t),
    )
    hair = smin(shell, back, 0.04)
    # Groove along the parting on the top of the head.
    part_x = 0.045 * g.parting
    groove = torch.exp(-(((x - part_x) / 0.009) ** 2)) * _smoothstep(0.10, 0.20, y) * _smoothstep(-0.06, 0.12, z)
    hair = hair + 0.006 * g.parting.abs() * groove
    hair = smax(hair, -face_cut, 0.012)
    # Nape: the hair ends above a plane that tilts down towards the back by an amount set by the hair length.
    drop = 0.08 + 0.30 * length
    slope = drop / 0.16
    norm = torch.sqrt(1.0 + slope * slope)
    below_flat = 0.03 - y
    below_tilted = ((0.03 - slope * (0.04 - z)) - y) / norm
    region = torch.minimum(below_flat, below_tilted)
    return smax(hair, region, 0.01)


# ------------------------------------------------------------------------------------------------------------
# Convenience


@torch.no_grad()
def sdf_points(params: HeadParams, points: torch.Tensor) -> torch.Tensor:
    """Field values at world points for each identity.

    Args:
        params: B identities.
        points: (B, N, 3) or (N, 3) (shared by all identities) world coordinates.

    Returns:
        (B, N) field values (negative inside the head).
    """
    geo = head_geometry(params)
    b = len(params)
    pts = points.to(device=params.device, dtype=torch.float32)
    if pts.dim() == 2:
        pts = pts.unsqueeze(0).expand(b, -1, -1)
    n = pts.shape[1]
    index = torch.arange(b, device=pts.device).repeat_interleave(n)
    flat = pts.reshape(-1, 3)
    values = head_sdf((flat[:, 0], flat[:, 1], flat[:, 2]), geo.gather(index))
    return values.reshape(b, n)
