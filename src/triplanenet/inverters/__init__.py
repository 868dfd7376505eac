"""Inversion methods; every one returns :class:`triplanenet.inversion.Inversion`.

:func:`build_inverter` turns a method name (as used by ``triplanenet invert --method``) into an inverter.
"""

from __future__ import annotations

from typing import Any

from triplanenet.errors import ConfigError
from triplanenet.inversion import Inverter
from triplanenet.inverters.encoder import TriPlaneNetInverter
from triplanenet.model import TriPlaneNet

METHOD_NAMES: tuple[str, ...] = ("triplanenet", "triplanenet+cttr", "w+-pred")
"""Every method :func:`build_inverter` knows, in the order tables list them."""


def build_inverter(method: str, model: TriPlaneNet, **options: Any) -> Inverter:
    """The inverter for ``method`` using ``model`` (its generator, and its encoders where the method needs them).

    Raises:
        ConfigError: unknown method name or an option the method does not take.
    """
    if method == "triplanenet":
        return TriPlaneNetInverter(model, cttr=False, **options)
    if method == "triplanenet+cttr":
        return TriPlaneNetInverter(model, cttr=True, **options)
    if method == "w+-pred":
        return TriPlaneNetInverter(model, first_branch_only=True, **options)
    raise ConfigError(f"unknown inversion method {method!r}; choose one of: {', '.join(METHOD_NAMES)}")


__all__ = ["METHOD_NAMES", "TriPlaneNetInverter", "build_inverter"]
