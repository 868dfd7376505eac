"""Latent editing of inversions (TriPlaneNet supplement, Sec. C).

* :mod:`~triplanenet.editing.directions`: GANSpace directions (PCA of sampled W codes) and user direction files.
* :mod:`~triplanenet.editing.edit`: fit a single ``w ∈ W`` to an inversion and build edited tri-planes
  ``T_edit = (G(w) + ΔT) + G(w_edit) − G(w)``.
"""

from triplanenet.editing.directions import (
    DIRECTIONS_FORMAT,
    Direction,
    GanSpace,
    compute_ganspace,
    load_direction_file,
    load_directions,
    resolve_direction,
    sample_w,
    save_direction_npy,
    save_directions,
)
from triplanenet.editing.edit import (
    EditBase,
    edit_planes,
    edited_inversion,
    edited_ws,
    fit_w,
    make_edit_base,
    reencode_offsets,
)

__all__ = [
    "DIRECTIONS_FORMAT",
    "Direction",
    "EditBase",
    "GanSpace",
    "compute_ganspace",
    "edit_planes",
    "edited_inversion",
    "edited_ws",
    "fit_w",
    "load_direction_file",
    "load_directions",
    "make_edit_base",
    "reencode_offsets",
    "resolve_direction",
    "sample_w",
    "save_direction_npy",
    "save_directions",
]
