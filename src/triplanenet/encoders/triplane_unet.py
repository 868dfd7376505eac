"""TriPlaneNet second branch: IR-SE U-Net that predicts tri-plane offsets (see ``docs/encoders.md``).

Keys: ``input_layer.*``, ``body.{0..23}.*``, ``up{1..4}.conv.double_conv.{0 BN, 1 conv, 2 PReLU, 3 conv, 4 PReLU,
5 PReLU}`` and the head ``final_head.{0..4}`` (v1) or ``final_head_two.{0..4}`` (v2). ``up1`` keeps the resolution;
``up2..up4`` and the step before the head double it (PixelShuffle or nearest, :attr:`TriPlaneEncoderConfig.upsampling`).
v2 concatenates the first-branch tri-planes in front of the last upsampled features.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from triplanenet.encoders.config import TriPlaneEncoderConfig
from triplanenet.encoders.irse import build_input_layer, build_units, check_image_batch, run_units
from triplanenet.errors import ConfigError, InputImageError


class DoubleConv(nn.Module):
    """Decoder block ``double_conv`` = [0 BN(in), 1 conv3x3(in→out, bias), 2 PReLU, 3 conv3x3(out→out, bias),
    4 PReLU, (5 PReLU when ``double_prelu``)]. (B, in, H, W) → (B, out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, double_prelu: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.PReLU(out_channels),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
            nn.PReLU(out_channels),
        ]
        if double_prelu:
            layers.append(nn.PReLU(out_channels))
        self.double_conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


def _upsampler(mode: str, factor: int) -> nn.Module:
    if factor == 1:
        # The official up1 uses PixelShuffle(1), which is the identity.
        return nn.PixelShuffle(1) if mode == "pixelshuffle" else nn.Identity()
    if mode == "pixelshuffle":
        return nn.PixelShuffle(factor)
    return nn.Upsample(scale_factor=factor, mode="nearest")


class Up(nn.Module):
    """Decoder step: upsample the deeper map, concatenate ``[skip, upsampled]``, then ``DoubleConv``.

    PixelShuffle x2 maps (B, C, H, W) → (B, C/4, 2H, 2W); nearest x2 keeps C.
    """

    def __init__(self, in_channels: int, out_channels: int, factor: int, mode: str, double_prelu: bool = True) -> None:
        super().__init__()
        self.up = _upsampler(mode, factor)
        self.conv = DoubleConv(in_channels, out_channels, double_prelu)

    def forward(self, deeper: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(deeper)], dim=1))


class TriPlaneEncoder(nn.Module):
    """IR-SE U-Net: (B, C_in, R, R) → (B, out_channels, R, R) tri-plane offsets (no output activation).

    Official v1: input (B, 6, 256, 256) = ``cat([y_hat_psp, x - y_hat_psp])`` in roughly [-1, 1] / [-2, 2].
    Official v2: input (B, 9, 256, 256) = ``cat([y_hat_psp, x - y_hat_psp, x_mirror - y_hat_psp_mirror])`` and the
    first-branch planes (B, 96, 256, 256). Output (B, 96, 256, 256): the residual added to the EG3D backbone planes
    (plane-major channel order) before the 3x32 reshape.
    Skips: last unit of stages 1, 2, 3 (``body.2``, ``body.6``, ``body.20``) and the *first* unit of stage 4
    (``body.21``); the bottom is the body output (``body.23``).
    """

    def __init__(self, cfg: TriPlaneEncoderConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg if cfg is not None else TriPlaneEncoderConfig.official()
        cfg = self.cfg
        mode = cfg.upsampling
        self.input_layer = build_input_layer(cfg.body)
        self.body = build_units(cfg.body)
        ins = cfg.up_in_channels
        outs = cfg.decoder_channels
        self.up1 = Up(ins[0], outs[0], 1, mode, cfg.double_prelu)
        self.up2 = Up(ins[1], outs[1], 2, mode, cfg.double_prelu)
        self.up3 = Up(ins[2], outs[2], 2, mode, cfg.double_prelu)
        self.up4 = Up(ins[3], outs[3], 2, mode, cfg.double_prelu)
        self.head = _upsampler(mode, 2)
        head = nn.Sequential(
            nn.Conv2d(cfg.head_in_channels, cfg.head_channels, kernel_size=3, padding=1),
            nn.PReLU(cfg.head_channels),
            nn.Conv2d(cfg.head_channels, cfg.head_channels, kernel_size=3, padding=1),
            nn.PReLU(cfg.head_channels),
            nn.Conv2d(cfg.head_channels, cfg.out_channels, kernel_size=1),
        )
        # The two releases name the head differently; only one of the attributes holds a module.
        self.final_head: nn.Sequential | None = head if cfg.version == 1 else None
        self.final_head_two: nn.Sequential | None = head if cfg.version == 2 else None
        last = cfg.body.stage_last_index
        first = cfg.body.stage_first_index
        self._taps = (last[0], last[1], last[2], first[3])

    @property
    def output_head(self) -> nn.Sequential:
        """The head, whichever name the version gives it."""
        return cast(nn.Sequential, self.final_head if self.cfg.version == 1 else self.final_head_two)

    def forward_with_features(
        self, x: torch.Tensor, planes: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Offsets plus encoder features ``c0, c1, c2, c3, bottom`` (sides R/2, R/4, R/8, R/16, R/16)."""
        cfg = self.cfg
        r = cfg.input_resolution
        check_image_batch(x, cfg.body.input_channels, r, "TriPlaneEncoder")
        if cfg.reads_planes:
            if planes is None:
                raise ConfigError("TriPlaneEncoder v2 needs the first-branch planes; call it as encoder(x, planes)")
            if planes.ndim != 4 or tuple(planes.shape) != (x.shape[0], cfg.plane_channels, r, r):
                raise InputImageError(
                    f"TriPlaneEncoder planes must have shape {(x.shape[0], cfg.plane_channels, r, r)}, "
                    f"got {tuple(planes.shape)}; pass the backbone planes at the input resolution"
                )
        elif planes is not None:
            raise ConfigError("TriPlaneEncoder v1 takes no planes; call it as encoder(x) or use version 2")
        bottom, taps = run_units(self.body, self.input_layer(x), self._taps)
        c0, c1, c2, c3 = (taps[i] for i in self._taps)
        y = self.up1(bottom, c3)
        y = self.up2(y, c2)
        y = self.up3(y, c1)
        y = self.up4(y, c0)
        y = self.head(y)
        if planes is not None:
            y = torch.cat([planes, y], dim=1)
        out = self.output_head(y)
        return out, {"c0": c0, "c1": c1, "c2": c2, "c3": c3, "bottom": bottom}

    def forward(self, x: torch.Tensor, planes: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C_in, R, R) [+ planes (B, plane_channels, R, R) for v2] → residual (B, out_channels, R, R)."""
        return self.forward_with_features(x, planes)[0]
