"""Inversion methods; every one returns :class:`triplanenet.inversion.Inversion`."""

from triplanenet.inverters.encoder import TriPlaneNetInverter

__all__ = ["TriPlaneNetInverter"]
