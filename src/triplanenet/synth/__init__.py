"""Procedural "synthetic heads" with ground truth: a parametric SDF head family rendered at EG3D cameras.

Identities are vectors (:class:`HeadParams`); :func:`render_heads` sphere-traces them from any EG3D camera
label and returns RGB, depth, mask and 2D/3D landmarks (:class:`SynthSample`); :func:`head_mesh` gives the
ground-truth mesh. Everything runs on the CPU and is deterministic::

    from triplanenet.synth import HeadParams, render_heads, sample_cameras
    g = torch.Generator().manual_seed(0)
    heads = HeadParams.sample(g, 16)
    sample = render_heads(heads, sample_cameras(g, 16), resolution=128)
"""

from triplanenet.synth.params import FIELDS, PARAM_DIM, Field, HeadParams
from triplanenet.synth.render import (
    LANDMARK_NAMES,
    RAY_END,
    RAY_START,
    SynthSample,
    head_albedo,
    head_landmarks,
    head_mesh,
    project_points,
    render_heads,
    sample_cameras,
    value_noise,
)
from triplanenet.synth.sdf import Geometry, SdfParts, head_geometry, head_parts, head_sdf, sdf_points

__all__ = [
    "FIELDS",
    "LANDMARK_NAMES",
    "PARAM_DIM",
    "RAY_END",
    "RAY_START",
    "Field",
    "Geometry",
    "HeadParams",
    "SdfParts",
    "SynthSample",
    "head_albedo",
    "head_geometry",
    "head_landmarks",
    "head_mesh",
    "head_parts",
    "head_sdf",
    "project_points",
    "render_heads",
    "sample_cameras",
    "sdf_points",
    "value_noise",
]
