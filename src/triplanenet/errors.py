"""Exceptions for user-facing problems. The CLI prints their message as one line, without a traceback."""


class TriplaneNetError(Exception):
    """Base class: a problem the user can fix (bad file, bad argument, bad camera)."""


class ConfigError(TriplaneNetError, ValueError):
    """A configuration or architecture description is invalid or unsupported."""


class CheckpointError(TriplaneNetError):
    """A checkpoint file is missing, corrupt, unsafe or does not match the architecture."""


class CameraError(TriplaneNetError, ValueError):
    """A camera label or camera file is malformed."""


class InputImageError(TriplaneNetError):
    """An input image cannot be read or used."""
