"""Checkpoint input/output: safe loading of EG3D / TriPlaneNet generator files and our safetensors format."""

from triplanenet.io.checkpoints import (
    RawGenerator,
    convert_generator,
    load_generator,
    read_generator_checkpoint,
    save_generator,
)

__all__ = [
    "RawGenerator",
    "convert_generator",
    "load_generator",
    "read_generator_checkpoint",
    "save_generator",
]
