"""The triangle-mesh container shared by the generator's shape extraction, the procedural heads, inversions and the
evaluation. Writers and readers for mesh files live in :mod:`triplanenet.io.mesh`, which re-exports :class:`Mesh`.

It sits at the bottom of the package (numpy only) so that model code (``eg3d/shapes.py``) need not import ``io``,
which itself depends on the model code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Mesh"]


@dataclass
class Mesh:
    """A triangle mesh in world units.

    Attributes:
        vertices: (V, 3) float32 positions.
        faces: (F, 3) int64 vertex indices, counter-clockwise seen from outside.
        colors: optional (V, 3) uint8 vertex colours.
    """

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray | None = None

    def edge_use_counts(self) -> np.ndarray:
        """How many faces share each undirected edge (all 2 for a closed, manifold surface)."""
        edges = np.concatenate([self.faces[:, [0, 1]], self.faces[:, [1, 2]], self.faces[:, [2, 0]]])
        edges.sort(axis=1)
        _, counts = np.unique(edges, axis=0, return_counts=True)
        return counts

    def is_watertight(self) -> bool:
        """True when every edge is shared by exactly two faces."""
        return len(self.faces) > 0 and bool(np.all(self.edge_use_counts() == 2))
