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
model width        ``TRIPLANENET_MAX_MODEL_WIDTH``       8 192        channels / latent sizes of a model config read
                                                                      from a file (official: 512)
model resolution   ``TRIPLANENET_MAX_MODEL_RESOLUTION``  4 096        image / plane sides of a model config
model depth        ``TRIPLANENET_MAX_MODEL_DEPTH``       256          layer and unit counts of a model config
model parameters   ``TRIPLANENET_MAX_MODEL_PARAMETERS``  1e9          estimated from the config before building
                                                                      (official generator: about 33 M)
camera file bytes  ``TRIPLANENET_MAX_CAMERA_FILE_BYTES`` 268 435 456  FFHQ's dataset.json (70 000 labels) is about
                                                                      30 MB; parsing takes ~10x the file in memory
=================  ====================================  ===========  =============================================
"""

from __future__ import annotations

import math
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
CAMERA_FILE_BYTES = Limit("bytes", "TRIPLANENET_MAX_CAMERA_FILE_BYTES", 256 * 2**20)


MODEL_WIDTH = Limit("channels", "TRIPLANENET_MAX_MODEL_WIDTH", 8192)
MODEL_RESOLUTION = Limit("pixels per side", "TRIPLANENET_MAX_MODEL_RESOLUTION", 4096)
MODEL_DEPTH = Limit("layers", "TRIPLANENET_MAX_MODEL_DEPTH", 256)
MODEL_PARAMETERS = Limit("parameters", "TRIPLANENET_MAX_MODEL_PARAMETERS", 1_000_000_000)
"""Sizes of a model config read from a file, checked before any tensor is allocated. The official generator has
about 30 M parameters and the official TriPlaneNet about 250 M; a billion fp32 parameters take 4 GB, and training
keeps about four copies (weights, gradients, two Adam moments): 16 GB."""


def shown(value: object) -> str:
    """A short printable rendering of a value read from a file (huge integers and long texts abbreviated)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"a {value.bit_length()}-bit integer"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def shown_error(exc: BaseException) -> str:
    """An exception's message as one short printable line (for errors about values read from a file)."""
    text = " ".join(str(exc).split()).encode("ascii", "backslashreplace").decode("ascii")
    return text if len(text) <= 200 else text[:197] + "..."


def config_int(value: object, name: str, *, minimum: int = 1, limit: Limit | None = None) -> int:
    """``value`` if it is a plain integer (not a bool, not a float) of at least ``minimum`` and within ``limit``.

    Raises:
        ConfigError: naming ``name``, the value, and what is expected.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {shown(value)}; fix the config")
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {shown(value)}; fix the config")
    if value.bit_length() > 64:
        raise ConfigError(f"{name} is {shown(value)}, far too large; fix the config")
    if limit is not None:
        limit.check(value, name)
    return value


def config_float(value: object, name: str) -> float:
    """``value`` if it is a finite int or float (not a bool).

    Raises:
        ConfigError: naming ``name`` and the value.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, got {shown(value)}; fix the config")
    if isinstance(value, int):
        if value.bit_length() > 64:
            raise ConfigError(f"{name} is {shown(value)}, far too large; fix the config")
        return float(value)
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value}; fix the config")
    return value


def config_power_of_two(value: object, name: str, minimum: int) -> int:
    """``value`` if it is an integer power of two between ``minimum`` and :data:`MODEL_RESOLUTION`.

    Raises:
        ConfigError: naming ``name`` and the value.
    """
    n = config_int(value, name, minimum=minimum, limit=MODEL_RESOLUTION)
    if n & (n - 1):
        raise ConfigError(f"{name} must be a power of two >= {minimum}, got {n}; fix the config")
    return n
