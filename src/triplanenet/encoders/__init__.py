"""TriPlaneNet encoders: pSp first branch, tri-plane U-Net second branch, IR-SE backbones (ArcFace-style)."""

from triplanenet.encoders.config import (
    IRSEBackboneConfig,
    IRSEConfig,
    PSPEncoderConfig,
    TriPlaneEncoderConfig,
)
from triplanenet.encoders.irse import BottleneckIR, BottleneckIRSE, IRSEBackbone, IRSEBody, SEModule
from triplanenet.encoders.psp import EqualLinear, GradualStyleBlock, GradualStyleEncoder
from triplanenet.encoders.triplane_unet import DoubleConv, TriPlaneEncoder, Up
from triplanenet.encoders.widen import widen_triplane_encoder

__all__ = [
    "BottleneckIR",
    "BottleneckIRSE",
    "DoubleConv",
    "EqualLinear",
    "GradualStyleBlock",
    "GradualStyleEncoder",
    "IRSEBackbone",
    "IRSEBackboneConfig",
    "IRSEBody",
    "IRSEConfig",
    "PSPEncoderConfig",
    "SEModule",
    "TriPlaneEncoder",
    "TriPlaneEncoderConfig",
    "Up",
    "widen_triplane_encoder",
]
