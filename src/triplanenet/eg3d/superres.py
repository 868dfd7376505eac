"""EG3D's ``SuperresolutionHybrid8XDC``: two StyleGAN2 skip blocks that lift the 128² feature image to 512²."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from triplanenet.eg3d.config import GeneratorConfig, NoiseMode
from triplanenet.eg3d.synthesis import SynthesisBlock

SR_CONV_CLAMP = 256.0


class SuperResolution(nn.Module):
    """Feature image (B, C, r, r) + raw RGB (B, 3, r, r) -> image (B, 3, 4·s, 4·s), s = ``img_resolution // 4``.

    Inputs whose side differs from s are first resized bilinearly (antialiased when configured). Only the last w is
    used (repeated for the 3 layers of each block). Keys: ``block0.*``, ``block1.*``.
    """

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.input_resolution = config.sr_input_resolution
        self.antialias = config.rendering.sr_antialias
        use_fp16 = config.sr_num_fp16_res > 0
        clamp = SR_CONV_CLAMP if use_fp16 else None
        ch0, ch1 = config.sr_channels
        res = config.img_resolution
        self.block0 = SynthesisBlock(
            config.triplane_channels, ch0, config.w_dim, res // 2, config.img_channels, use_fp16, clamp
        )
        self.block1 = SynthesisBlock(ch0, ch1, config.w_dim, res, config.img_channels, use_fp16, clamp)

    def forward(
        self,
        rgb: torch.Tensor,
        features: torch.Tensor,
        ws: torch.Tensor,
        noise_mode: NoiseMode = "none",
        force_fp32: bool = False,
    ) -> torch.Tensor:
        ws = ws[:, -1:, :].repeat(1, 3, 1)
        if features.shape[-1] != self.input_resolution:
            size = (self.input_resolution, self.input_resolution)
            features = F.interpolate(
                features, size=size, mode="bilinear", align_corners=False, antialias=self.antialias
            )
            rgb = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False, antialias=self.antialias)
        x, img = self.block0(features, rgb, ws, noise_mode=noise_mode, force_fp32=force_fp32)
        _, img = self.block1(x, img, ws, noise_mode=noise_mode, force_fp32=force_fp32)
        return img
