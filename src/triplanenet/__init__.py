"""triplanenet: single-photo 3D head inversion into EG3D with TriPlaneNet, in pure PyTorch.

Main entry points::

    from triplanenet import load_generator, load_triplanenet, TriPlaneNetInverter
"""

from triplanenet.eg3d.config import GeneratorConfig, RenderingConfig
from triplanenet.eg3d.generator import SynthesisOutput, TriPlaneGenerator
from triplanenet.inversion import Inversion, Inverter
from triplanenet.inverters import TriPlaneNetInverter
from triplanenet.io.checkpoints import convert_generator, load_generator, save_generator
from triplanenet.io.model_checkpoints import load_triplanenet, save_triplanenet
from triplanenet.model import TriPlaneNet, TriPlaneNetConfig

__version__ = "0.1.0"

__all__ = [
    "GeneratorConfig",
    "Inversion",
    "Inverter",
    "RenderingConfig",
    "SynthesisOutput",
    "TriPlaneGenerator",
    "TriPlaneNet",
    "TriPlaneNetConfig",
    "TriPlaneNetInverter",
    "convert_generator",
    "load_generator",
    "load_triplanenet",
    "save_generator",
    "save_triplanenet",
]
