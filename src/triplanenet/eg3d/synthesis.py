"""StyleGAN2 "skip" synthesis network that produces EG3D's tri-plane features, and its building blocks.

The same :class:`SynthesisBlock` is reused by the super-resolution module.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn

from triplanenet.eg3d.config import GeneratorConfig, NoiseMode
from triplanenet.eg3d.layers import (
    LRELU_GAIN,
    FullyConnectedLayer,
    bias_act,
    can_modify_inplace,
    modulated_conv2d,
    setup_filter,
    upsample2d,
)
from triplanenet.eg3d.mapping import MappingNetwork


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally 2x upsampling) + noise + bias + lrelu(0.2)·√2 + optional clamp.

    Keys: ``weight`` (O, I, 3, 3), ``bias`` (O), ``noise_strength`` (), buffers ``noise_const`` (R, R) and
    ``resample_filter`` (4, 4), ``affine.weight`` (I, w_dim), ``affine.bias`` (I).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        up: int = 1,
        use_noise: bool = True,
        conv_clamp: float | None = None,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter())
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        if use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros([]))

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, noise_mode: NoiseMode = "random", gain: float = 1.0
    ) -> torch.Tensor:
        """(B, I, R/up, R/up) -> (B, O, R, R)."""
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device)
            noise = noise * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(
            x,
            self.weight,
            styles,
            demodulate=True,
            up=self.up,
            resample_filter=self.resample_filter,
            noise=noise,
        )
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, "lrelu", gain=LRELU_GAIN * gain, clamp=clamp, inplace=can_modify_inplace(x))

    def extra_repr(self) -> str:
        return f"in={self.in_channels}, out={self.out_channels}, resolution={self.resolution}, up={self.up}"


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv without demodulation (style scaled by 1/sqrt(I)) + bias + optional clamp.

    Keys: ``weight`` (O, I, 1, 1), ``bias`` (O), ``affine.*``.
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return bias_act(x, self.bias, clamp=self.conv_clamp, inplace=can_modify_inplace(x))


class SynthesisBlock(nn.Module):
    """One resolution of a skip-architecture StyleGAN2 generator.

    Consumes ``num_conv + 1`` consecutive ws: ``conv0`` (absent in the first block, which starts from ``const``),
    ``conv1`` and ``torgb``. The running skip image is upsampled 2x and the ToRGB output added.

    With ``up=1`` (EG3D's ``SynthesisBlockNoUp``, the first block of the 2X/4X super-resolution modules) ``conv0``
    keeps the input resolution and the skip image is not upsampled; the keys are the same.

    Keys: ``const`` (first block), buffer ``resample_filter``, ``conv0.*``, ``conv1.*``, ``torgb.*``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        use_fp16: bool = False,
        conv_clamp: float | None = None,
        use_noise: bool = True,
        up: int = 2,
    ) -> None:
        super().__init__()
        if up not in (1, 2):
            raise ValueError(f"up must be 1 or 2, got {up}")
        self.in_channels = in_channels
        self.resolution = resolution
        self.use_fp16 = use_fp16
        self.up = up
        self.register_buffer("resample_filter", setup_filter())
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(
                in_channels, out_channels, w_dim, resolution, up=up, use_noise=use_noise, conv_clamp=conv_clamp
            )
        self.conv1 = SynthesisLayer(
            out_channels, out_channels, w_dim, resolution, use_noise=use_noise, conv_clamp=conv_clamp
        )
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        noise_mode: NoiseMode = "random",
        force_fp32: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, I, R/up, R/up) or None for the first block; img: running skip image or None; ws: (B, n, w_dim)."""
        w_iter: Iterator[torch.Tensor] = iter(ws.unbind(dim=1))
        dtype = torch.float16 if self.use_fp16 and not force_fp32 and ws.device.type == "cuda" else torch.float32
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x, next(w_iter), noise_mode)
        else:
            assert x is not None
            x = x.to(dtype)
            x = self.conv0(x, next(w_iter), noise_mode)
            x = self.conv1(x, next(w_iter), noise_mode)
        if img is not None and self.up == 2:
            img = upsample2d(img, self.resample_filter)
        y = self.torgb(x, next(w_iter)).to(torch.float32)
        img = y if img is None else img + y
        return x, img


class SynthesisNetwork(nn.Module):
    """Blocks ``b4 … b{backbone_resolution}``: ws (B, num_ws, w_dim) -> features (B, 3·C, R, R), float32."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.resolution = config.backbone_resolution
        self.img_channels = config.backbone_channels
        self.block_resolutions = [2**i for i in range(2, int(math.log2(self.resolution)) + 1)]
        fp16_resolution = max(2 ** (int(math.log2(self.resolution)) + 1 - config.num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = config.channels_at(res // 2) if res > 4 else 0
            block = SynthesisBlock(
                in_channels,
                config.channels_at(res),
                config.w_dim,
                res,
                self.img_channels,
                use_fp16=res >= fp16_resolution,
                conv_clamp=config.conv_clamp,
            )
            setattr(self, f"b{res}", block)
            self.num_ws += block.num_conv
        self.num_ws += 1  # the last ToRGB
        if self.num_ws != config.num_ws:
            raise AssertionError("internal: num_ws bookkeeping mismatch")

    def forward(self, ws: torch.Tensor, noise_mode: NoiseMode = "random") -> torch.Tensor:
        ws = ws.to(torch.float32)
        x: torch.Tensor | None = None
        img: torch.Tensor | None = None
        start = 0
        for res in self.block_resolutions:
            block: SynthesisBlock = getattr(self, f"b{res}")
            block_ws = ws.narrow(1, start, block.num_conv + block.num_torgb)
            start += block.num_conv
            x, img = block(x, img, block_ws, noise_mode=noise_mode)
        assert img is not None
        return img


class Backbone(nn.Module):
    """Container matching EG3D's ``backbone`` keys: ``backbone.mapping.*`` and ``backbone.synthesis.*``."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.synthesis = SynthesisNetwork(config)
        self.mapping = MappingNetwork(
            config.z_dim,
            config.c_dim,
            config.w_dim,
            num_ws=self.synthesis.num_ws,
            num_layers=config.mapping_layers,
            lr_multiplier=config.mapping_lr_multiplier,
        )
