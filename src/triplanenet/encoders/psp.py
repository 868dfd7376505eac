"""pSp ``GradualStyleEncoder``: TriPlaneNet's first branch, image → W+ style codes (without ``latent_avg``).

Keys (official): ``input_layer.*``, ``body.{0..23}.*`` (IR-SE-50),
``styles.{0..13}.convs.{0,2,4,…}.{weight,bias}``,
``styles.{i}.linear.{weight,bias}``, ``latlayer1.{weight,bias}``, ``latlayer2.{weight,bias}``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from triplanenet.encoders.config import PSPEncoderConfig
from triplanenet.encoders.irse import build_input_layer, build_units, check_image_batch, run_units


class EqualLinear(nn.Module):
    """Equalized-LR linear layer (rosinality StyleGAN2 layout), no activation.

    Effective weight ``weight * lr_mul / sqrt(in_features)``, effective bias ``bias * lr_mul``.
    Keys: ``weight`` (out, in), ``bias`` (out). Input (..., in) → output (..., out).
    """

    def __init__(self, in_features: int, out_features: int, lr_mul: float = 1.0, bias_init: float = 0.0) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.lr_mul = lr_mul
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, lr_mul={self.lr_mul}"


class GradualStyleBlock(nn.Module):
    """pSp "map2style" head: ``log2(spatial)`` x [stride-2 conv3x3, LeakyReLU(0.01)], then ``EqualLinear``.

    ``convs`` holds the convs at even indices and the LeakyReLUs at odd indices.
    Input (B, in_channels, spatial, spatial), ``spatial`` a power of two → output (B, out_channels).
    """

    def __init__(self, in_channels: int, out_channels: int, spatial: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.spatial = spatial
        n_convs = int(math.log2(spatial))
        layers: list[nn.Module] = []
        for i in range(n_convs):
            layers.append(
                nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, kernel_size=3, stride=2, padding=1)
            )
            layers.append(nn.LeakyReLU(0.01))
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_channels, out_channels, lr_mul=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(x)
        return self.linear(x.reshape(x.shape[0], self.out_channels))


def _refine_level(coarser: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """One top-down pyramid step: ``coarser`` resized bilinearly (align_corners=True) to the size of ``skip`` (a
    1x1-projected body feature), plus ``skip``."""
    return F.interpolate(coarser, size=skip.shape[-2:], mode="bilinear", align_corners=True) + skip


class GradualStyleEncoder(nn.Module):
    """pSp encoder with an IR-SE body and a 3-level feature pyramid.

    Input: (B, 3, R, R) image in [-1, 1], R = ``cfg.input_resolution`` (256 official).
    Output: (B, n_styles, w_dim) style offsets — TriPlaneNet adds ``latent_avg`` (n_styles, w_dim) afterwards.
    Pyramid over the body's stage outputs at strides 4, 8 and 16 (last unit of stages 2, 3, 4): the coarse level
    is the stride-16 feature; the middle level adds ``latlayer1`` (stride 8) to it, upsampled; the fine level adds
    ``latlayer2`` (stride 4) to the middle one, upsampled. Style heads ``[0, coarse_ind)`` read the coarse level,
    ``[coarse_ind, middle_ind)`` the middle one and the rest the fine one.
    """

    def __init__(self, cfg: PSPEncoderConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg if cfg is not None else PSPEncoderConfig.official()
        body_cfg = self.cfg.body
        top = body_cfg.channels[3]
        self.input_layer = build_input_layer(body_cfg)
        self.body = build_units(body_cfg)
        s_coarse, s_middle, s_fine = self.cfg.head_spatial
        self.styles = nn.ModuleList()
        for i in range(self.cfg.n_styles):
            if i < self.cfg.coarse_ind:
                spatial = s_coarse
            elif i < self.cfg.middle_ind:
                spatial = s_middle
            else:
                spatial = s_fine
            self.styles.append(GradualStyleBlock(top, self.cfg.w_dim, spatial))
        self.latlayer1 = nn.Conv2d(body_cfg.channels[2], top, kernel_size=1)
        self.latlayer2 = nn.Conv2d(body_cfg.channels[1], top, kernel_size=1)
        last = body_cfg.stage_last_index
        self._taps = (last[1], last[2], last[3])

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Style codes (B, n_styles, w_dim) plus the body features ``{'stride4', 'stride8', 'stride16'}`` (R/4, R/8,
        R/16)."""
        r = self.cfg.input_resolution
        check_image_batch(x, self.cfg.body.input_channels, r, "GradualStyleEncoder")
        _, taps = run_units(self.body, self.input_layer(x), self._taps)
        features = dict(zip(("stride4", "stride8", "stride16"), (taps[i] for i in self._taps), strict=True))
        coarse = features["stride16"]
        middle = _refine_level(coarse, self.latlayer1(features["stride8"]))
        fine = _refine_level(middle, self.latlayer2(features["stride4"]))
        codes = []
        for index, head in enumerate(self.styles):
            if index < self.cfg.coarse_ind:
                codes.append(head(coarse))
            elif index < self.cfg.middle_ind:
                codes.append(head(middle))
            else:
                codes.append(head(fine))
        return torch.stack(codes, dim=1), features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, R, R) in [-1, 1] → (B, n_styles, w_dim) codes, without ``latent_avg``."""
        return self.forward_with_features(x)[0]
