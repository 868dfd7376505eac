"""Resource limits: inputs that would need more memory or time than a 24 GB machine has are refused up front.

Each limit is checked before anything is allocated (image pixels from the file header, seed ranges before the
list is built, sample counts and grid sizes before rendering) and says in its message how to raise it: every limit
can be changed with an environment variable, e.g. ``TRIPLANENET_MAX_IMAGE_PIXELS=300000000``.

=================  ====================================  ===========  =============================================
limit              environment variable                  default      why this default
=================  ====================================  ===========  =============================================
image pixels       ``TRIPLANENET_MAX_IMAGE_PIXELS``      120 000 000  a 108-MP phone photo decodes in about 2 GB;
                                                                      225 MP took 5.7 GB
seeds per run      ``TRIPLANENET_MAX_SEEDS``             100 000      each seed writes several files
depth samples      ``TRIPLANENET_MAX_DEPTH_SAMPLES``     512          5x the official 96; memory grows linearly
mesh resolution    ``TRIPLANENET_MAX_MESH_RESOLUTION``   512          EG3D's own extraction grid; 512³ densities
                                                                      plus marching cubes take a few GB
=================  ====================================  ===========  =============================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from triplanenet.errors import ConfigError


@dataclass(frozen=True)
class Limit:
    """One resource limit: its default and the environment variable that overrides it."""

    what: str
    env: str
    default: int

    def value(self) -> int:
        """The limit in force: the environment variable when set (a positive integer), else the default.

        Raises:
            ConfigError: the environment variable is set to something other than a positive integer.
        """
        text = os.environ.get(self.env, "").strip().replace("_", "")
        if not text:
            return self.default
        if not text.isdigit() or int(text) < 1:
            raise ConfigError(f"{self.env}={os.environ[self.env]!r} is not a positive integer; fix or unset it")
        return int(text)

    def check(self, value: int, option: str) -> int:
        """``value`` if it is within the limit.

        Raises:
            ConfigError: ``value`` exceeds the limit (the message names ``option`` and the variable to raise).
        """
        limit = self.value()
        if value > limit:
            raise ConfigError(
                f"{option} {value} is over the limit of {limit} {self.what}; use a smaller value, or set "
                f"{self.env} to raise the limit if this machine has the memory"
            )
        return value


IMAGE_PIXELS = Limit("pixels per image", "TRIPLANENET_MAX_IMAGE_PIXELS", 120_000_000)
SEEDS = Limit("seeds per run", "TRIPLANENET_MAX_SEEDS", 100_000)
DEPTH_SAMPLES = Limit("samples per ray", "TRIPLANENET_MAX_DEPTH_SAMPLES", 512)
MESH_RESOLUTION = Limit("grid points per side", "TRIPLANENET_MAX_MESH_RESOLUTION", 512)
