"""StyleGAN2-ADA residual discriminator: the critic of TriPlaneNet v2's optional adversarial loss.

v2 training (``--use_discriminator``) scores generated 512² faces with the unconditional (no camera label) "resnet"
discriminator of StyleGAN2-ADA (Karras et al. 2020), initialised from ``pretrained_models/discriminator.pth``.
State-dict keys follow the official module tree, so that file loads by name (see
:mod:`triplanenet.io.discriminator_checkpoints`). For the 512² preset, channels are
``min(channel_base // res, channel_max)``::

    b512   fromrgb 1x1 3->64 | conv0 3x3 64->64 | conv1 3x3 down2 64->128 | skip 1x1 down2 64->128     512 -> 256
    b256   conv0 128->128 | conv1 128->256 | skip 128->256                                          256 -> 128
    b128   conv0 256->256 | conv1 256->512 | skip 256->512                                          128 -> 64
    b64 .. b8   conv0 512->512 | conv1 512->512 | skip 512->512                                      64 -> 4
    b4     minibatch std (+1 ch) | conv 3x3 513->512 | fc 8192->512 | out 512->1                   4 -> logit

Every block computes ``(skip(x) + conv1(conv0(x))) * sqrt(1/2)`` (the sqrt(1/2) is folded into the two branches'
gains and clamps). Convolutions use the equalized learning rate (stored weights are scaled by ``1/sqrt(fan_in)`` at
run time), bias + leaky ReLU(0.2) with gain sqrt(2), and clamp activations to ``+-conv_clamp``; the down-sampling
convolutions low-pass filter with ``[1, 3, 3, 1]`` first. The skip branch has no bias, activation or clamp.

Precision: the official coach trains with ``num_fp16_res = 4`` (the four highest resolutions in fp16 on CUDA); this
module always computes in the dtype of its input, and the clamp is applied in every dtype exactly as officially.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from triplanenet.eg3d.layers import (
    LRELU_GAIN,
    FullyConnectedLayer,
    bias_act,
    conv2d_down,
    setup_filter,
)
from triplanenet.errors import ConfigError, InputImageError

RESIDUAL_GAIN = math.sqrt(0.5)
"""Scale of both branches of a residual block, so that their sum keeps unit variance."""
MBSTD_EPS = 1e-8
"""Added to the group variance before the square root in the minibatch-std feature."""


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Architecture of the residual discriminator; the default is TriPlaneNet v2's 512² critic."""

    img_resolution: int = 512
    """Side of the square input image (power of two, >= 8)."""
    img_channels: int = 3
    """Channels of the input image."""
    channel_base: int = 32768
    """Channels at resolution r are ``min(channel_base // r, channel_max)``."""
    channel_max: int = 512
    """Upper bound on the channels of any layer."""
    conv_clamp: float | None = 256.0
    """Clamp the activated output of every bias-carrying convolution to ``+-conv_clamp``; None disables it."""
    mbstd_group_size: int | None = None
    """Samples per minibatch-std group (``min(group, batch)``); None = the whole batch is one group."""
    mbstd_num_channels: int = 1
    """Feature channels appended by the minibatch-std layer; 0 disables the layer."""
    architecture: Literal["resnet"] = "resnet"
    """Block type; only StyleGAN2's residual design (what TriPlaneNet v2 uses) is implemented."""

    def __post_init__(self) -> None:
        res = self.img_resolution
        if res < 8 or res & (res - 1):
            raise ConfigError(f"img_resolution must be a power of two >= 8, got {res}")
        if self.img_channels < 1:
            raise ConfigError(f"img_channels must be positive, got {self.img_channels}")
        if self.architecture != "resnet":
            raise ConfigError(f"architecture must be 'resnet' (the only one implemented), got {self.architecture!r}")
        if self.mbstd_group_size is not None and self.mbstd_group_size < 1:
            raise ConfigError(f"mbstd_group_size must be >= 1 or None, got {self.mbstd_group_size}")
        if self.mbstd_num_channels < 0:
            raise ConfigError(f"mbstd_num_channels must be >= 0, got {self.mbstd_num_channels}")
        if self.mbstd_num_channels and self.channels_at(4) % self.mbstd_num_channels:
            raise ConfigError(
                f"mbstd_num_channels ({self.mbstd_num_channels}) must divide the 4x4 channels ({self.channels_at(4)})"
            )
        if min(self.channels_at(r) for r in (*self.block_resolutions, 4)) < 1:
            raise ConfigError(
                f"channel_base {self.channel_base} is too small for {res}² inputs (a layer would get 0 channels)"
            )

    def channels_at(self, resolution: int) -> int:
        """Feature channels of the layers working at ``resolution``."""
        return min(self.channel_base // resolution, self.channel_max)

    @property
    def block_resolutions(self) -> tuple[int, ...]:
        """Input side of each down-sampling block, from ``img_resolution`` down to 8."""
        return tuple(2**i for i in range(int(math.log2(self.img_resolution)), 2, -1))

    @classmethod
    def official_v2(cls) -> DiscriminatorConfig:
        """The discriminator of the official v2 coach (512², base 32768, max 512, clamp 256, whole-batch mbstd)."""
        return cls()

    @classmethod
    def tiny(cls) -> DiscriminatorConfig:
        """A small 64² critic for tests and CPU smoke runs (8..32 channels)."""
        return cls(img_resolution=64, channel_base=512, channel_max=32)

    @classmethod
    def from_official_kwargs(cls, init_kwargs: dict[str, Any]) -> DiscriminatorConfig:
        """Translate StyleGAN2-ADA ``Discriminator`` ``init_kwargs`` (unconditional resnet variant only).

        ``num_fp16_res`` and the mapping options are ignored (precision is the caller's; no label is mapped).
        """
        c_dim = int(init_kwargs.get("c_dim", 0))
        if c_dim != 0:
            raise ConfigError(f"only unconditional discriminators (c_dim 0) are supported, got c_dim {c_dim}")
        block = init_kwargs.get("block_kwargs", {}) or {}
        epilogue = init_kwargs.get("epilogue_kwargs", {}) or {}
        for where, kwargs in (("block_kwargs", block), ("epilogue_kwargs", epilogue)):
            if kwargs.get("activation", "lrelu") != "lrelu":
                raise ConfigError(f"{where}.activation must be 'lrelu', got {kwargs['activation']!r}")
        if list(block.get("resample_filter", [1, 3, 3, 1])) != [1, 3, 3, 1]:
            raise ConfigError(f"block_kwargs.resample_filter must be [1, 3, 3, 1], got {block['resample_filter']}")
        clamp = init_kwargs.get("conv_clamp")
        group = epilogue.get("mbstd_group_size", 4)
        return cls(
            img_resolution=int(init_kwargs["img_resolution"]),
            img_channels=int(init_kwargs.get("img_channels", 3)),
            channel_base=int(init_kwargs.get("channel_base", 32768)),
            channel_max=int(init_kwargs.get("channel_max", 512)),
            conv_clamp=None if clamp is None else float(clamp),
            mbstd_group_size=None if group is None else int(group),
            mbstd_num_channels=int(epilogue.get("mbstd_num_channels", 1)),
            architecture=init_kwargs.get("architecture", "resnet"),
        )

    def build(self) -> Discriminator:
        """A freshly initialised :class:`Discriminator` (float32, CPU)."""
        return Discriminator(self)


class EqualizedConv2d(nn.Module):
    """Equalized-LR convolution with optional bias, FIR down-sampling, activation and clamp.

    Keys: ``weight`` (O, I, k, k), ``bias`` (O) when ``bias=True``, ``resample_filter`` (4, 4) (always stored, as
    in the official checkpoints, even where nothing is resampled).

    ``forward(x, gain)`` computes ``clamp(act(conv(x, weight / sqrt(I k k)) + bias) * act_gain * gain, +-clamp *
    gain)`` where ``act_gain`` is sqrt(2) for lrelu and 1 for linear.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: Literal["lrelu", "linear"] = "lrelu",
        down: bool = False,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.activation = activation
        self.down = down
        self.conv_clamp = conv_clamp
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.register_buffer("resample_filter", setup_filter())
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.act_gain = LRELU_GAIN if activation == "lrelu" else 1.0

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        """(B, I, H, W) -> (B, O, H, W), or (B, O, H/2, W/2) when ``down``."""
        weight = (self.weight * self.weight_gain).to(x.dtype)
        if self.down:
            x = conv2d_down(x, weight, self.resample_filter)
        else:
            x = nn.functional.conv2d(x, weight, padding=weight.shape[-1] // 2)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, self.activation, gain=self.act_gain * gain, clamp=clamp)

    def extra_repr(self) -> str:
        out_ch, in_ch, k, _ = self.weight.shape
        return f"{in_ch}, {out_ch}, kernel_size={k}, activation={self.activation}, down={self.down}"


class ResidualDownBlock(nn.Module):
    """One resolution of the critic: (B, C_in, R, R) -> (B, C_out, R/2, R/2).

    The first block (``from_rgb=True``) takes the image itself and lifts it to features with a 1x1 ``fromrgb``.
    ``resample_filter`` is stored only for checkpoint compatibility (the official "skip" design uses it).
    """

    def __init__(
        self, in_channels: int, out_channels: int, img_channels: int, from_rgb: bool, conv_clamp: float | None
    ) -> None:
        super().__init__()
        self.register_buffer("resample_filter", setup_filter())
        self.fromrgb = EqualizedConv2d(img_channels, in_channels, 1, conv_clamp=conv_clamp) if from_rgb else None
        self.conv0 = EqualizedConv2d(in_channels, in_channels, 3, conv_clamp=conv_clamp)
        self.conv1 = EqualizedConv2d(in_channels, out_channels, 3, down=True, conv_clamp=conv_clamp)
        self.skip = EqualizedConv2d(in_channels, out_channels, 1, bias=False, activation="linear", down=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fromrgb is not None:
            x = self.fromrgb(x)
        shortcut = self.skip(x, gain=RESIDUAL_GAIN)
        return shortcut + self.conv1(self.conv0(x), gain=RESIDUAL_GAIN)


def minibatch_stddev(x: torch.Tensor, group_size: int | None, num_channels: int = 1) -> torch.Tensor:
    """Append the within-group feature std as ``num_channels`` constant maps: (B, C, H, W) -> (B, C + F, H, W).

    Groups have ``G = min(group_size, B)`` members (``G = B`` for None); sample ``i`` belongs to group ``i % (B/G)``.
    Channels are split into ``F = num_channels`` slices; each gets ``mean_{c,h,w} sqrt(var_group + 1e-8)`` with the
    biased (population) variance. A batch of one therefore gets the constant ``1e-4``.

    Raises:
        InputImageError: ``B`` is not a multiple of the group size.
    """
    batch, channels, height, width = x.shape
    group = batch if group_size is None else min(group_size, batch)
    if batch % group:
        raise InputImageError(
            f"the discriminator's minibatch-std layer needs a batch size divisible by {group}, got {batch}"
        )
    y = x.reshape(group, batch // group, num_channels, channels // num_channels, height, width)
    y = y - y.mean(dim=0)
    std = (y.square().mean(dim=0) + MBSTD_EPS).sqrt()  # (B/G, F, C/F, H, W)
    std = std.mean(dim=[2, 3, 4])  # (B/G, F)
    std = std.reshape(-1, num_channels, 1, 1).repeat(group, 1, height, width)  # (B, F, H, W)
    return torch.cat([x, std], dim=1)


class DiscriminatorHead(nn.Module):
    """The 4x4 epilogue: minibatch std -> 3x3 conv -> flatten -> fc (lrelu) -> out (linear): (B, C, 4, 4) -> (B, 1).

    Keys: ``conv.*``, ``fc.weight`` (C, 16 C), ``fc.bias``, ``out.weight`` (1, C), ``out.bias``.
    """

    def __init__(self, channels: int, config: DiscriminatorConfig) -> None:
        super().__init__()
        self.mbstd_group_size = config.mbstd_group_size
        self.mbstd_num_channels = config.mbstd_num_channels
        self.conv = EqualizedConv2d(channels + config.mbstd_num_channels, channels, 3, conv_clamp=config.conv_clamp)
        self.fc = FullyConnectedLayer(channels * 4 * 4, channels, activation="lrelu")
        self.out = FullyConnectedLayer(channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mbstd_num_channels > 0:
            x = minibatch_stddev(x, self.mbstd_group_size, self.mbstd_num_channels)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        return self.out(x)


class Discriminator(nn.Module):
    """Unconditional StyleGAN2-ADA residual discriminator: image (B, C, R, R) in [-1, 1] -> logits (B, 1).

    Submodules ``b{R}``, ``b{R/2}``, ..., ``b8`` (:class:`ResidualDownBlock`) and ``b4`` (:class:`DiscriminatorHead`),
    named as in the official state dict. Positive logits mean "real". The logits of one sample depend on the rest of
    its minibatch-std group (the whole batch for the v2 preset).
    """

    def __init__(self, config: DiscriminatorConfig | None = None) -> None:
        super().__init__()
        self.config = config = config if config is not None else DiscriminatorConfig.official_v2()
        for res in config.block_resolutions:
            block = ResidualDownBlock(
                in_channels=config.channels_at(res),
                out_channels=config.channels_at(res // 2),
                img_channels=config.img_channels,
                from_rgb=res == config.img_resolution,
                conv_clamp=config.conv_clamp,
            )
            self.add_module(f"b{res}", block)
        self.b4 = DiscriminatorHead(config.channels_at(4), config)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Score images: (B, img_channels, R, R) in [-1, 1] -> (B, 1) logits, in the image's dtype.

        Raises:
            InputImageError: wrong shape, or a batch that the minibatch-std groups cannot split.
        """
        cfg = self.config
        expected = (cfg.img_channels, cfg.img_resolution, cfg.img_resolution)
        if image.ndim != 4 or tuple(image.shape[1:]) != expected:
            raise InputImageError(
                f"the discriminator expects images of shape (B, {', '.join(map(str, expected))}), "
                f"got {tuple(image.shape)}"
            )
        x = image
        for res in cfg.block_resolutions:
            x = getattr(self, f"b{res}")(x)
        return self.b4(x)
