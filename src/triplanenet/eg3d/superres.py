"""EG3D's super-resolution modules: two StyleGAN2 skip blocks that lift the neural rendering to the output size.

``SuperresolutionHybrid8XDC`` (the 512² releases: 128² → 512², both blocks upsample) and, with ``sr_scale=2``,
``SuperresolutionHybrid2X`` / ``4X`` (``shapenetcars128-64``: 64² → 128²; the first block keeps the input size).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from triplanenet.eg3d.config import GeneratorConfig, NoiseMode
from triplanenet.eg3d.layers import setup_filter
from triplanenet.eg3d.synthesis import SynthesisBlock

SR_CONV_CLAMP = 256.0


class SuperResolution(nn.Module):
    """Feature image (B, C, r, r) + raw RGB (B, 3, r, r) -> image (B, 3, S, S), S = ``img_resolution``.

    The module works from s = ``S // sr_scale``: inputs whose side differs from s are first resized bilinearly
    (antialiased when configured). ``sr_scale`` 4: both blocks upsample (s → S/2 → S); ``sr_scale`` 2: block0 stays
    at s, block1 upsamples to S. Only the last w is used (repeated for the 3 layers of each block).
    Keys: ``block0.*``, ``block1.*``, and ``resample_filter`` for the classes that register one (all but 8XDC).
    """

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.input_resolution = config.sr_input_resolution
        self.antialias = config.rendering.sr_antialias
        use_fp16 = config.sr_num_fp16_res > 0
        clamp = SR_CONV_CLAMP if use_fp16 else None
        ch0, ch1 = config.sr_channels
        res = config.img_resolution
        if config.sr_filter_buffer:
            self.register_buffer("resample_filter", setup_filter())
        first_up = 2 if config.sr_scale == 4 else 1
        self.block0 = SynthesisBlock(
            config.triplane_channels, ch0, config.w_dim, res // 2, config.img_channels, use_fp16, clamp, up=first_up
        )
        self.block1 = SynthesisBlock(ch0, ch1, config.w_dim, res, config.img_channels, use_fp16, clamp)

    def forward(
        self,
        rgb: torch.Tensor,
        features: torch.Tensor,
        ws: torch.Tensor,
        noise_mode: NoiseMode = "none",
        force_fp32: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(image, raw_rgb)``.

        ``raw_rgb`` is the raw image as EG3D hands it back next to ``image``: ``rgb`` itself, except for the 2X/4X
        modules fed at their input size. There the official ``SynthesisBlockNoUp`` adds its ToRGB output *in place*
        into the skip image, which is EG3D's ``image_raw`` (a view of ``feature_image[:, :3]``), so the official
        generator returns ``image_raw`` = render + block0's RGB (and its ``feature_image`` carries the same first
        three channels), in training as in inference (same code path). ``eg3d_shapenet128_seed3.pt`` records it. We
        return it explicitly, without aliasing.
        """
        ws = ws[:, -1:, :].repeat(1, 3, 1)
        resized = features.shape[-1] != self.input_resolution
        raw_rgb = rgb
        if resized:
            size = (self.input_resolution, self.input_resolution)
            features = F.interpolate(
                features, size=size, mode="bilinear", align_corners=False, antialias=self.antialias
            )
            rgb = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False, antialias=self.antialias)
        x, img = self.block0(features, rgb, ws, noise_mode=noise_mode, force_fp32=force_fp32)
        if self.block0.up == 1 and not resized:
            raw_rgb = img
        _, img = self.block1(x, img, ws, noise_mode=noise_mode, force_fp32=force_fp32)
        return img, raw_rgb
