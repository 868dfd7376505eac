"""IR / IR-SE residual networks (InsightFace layout) used by pSp, the TriPlaneNet U-Net and the identity loss.

State-dict keys follow the official layout so released weights load by name:

* input layer: ``input_layer.{0 conv3x3 (no bias), 1 BatchNorm2d, 2 PReLU}``
* unit ``N``: ``body.N.res_layer.{0 BN(in), 1 conv3x3 (in→out), 2 PReLU, 3 conv3x3 (out→out, stride),
  4 BN(out), 5 SE (fc1/fc2, IR-SE only)}`` and, when the channel count changes,
  ``body.N.shortcut_layer.{0 conv1x1, 1 BN}``
* ArcFace head: ``output_layer.{0 BN2d, 1 Dropout, 2 Flatten, 3 Linear, 4 BN1d}``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from triplanenet.encoders.config import IRSEBackboneConfig, IRSEConfig
from triplanenet.errors import InputImageError


class SEModule(nn.Module):
    """Squeeze-excitation: ``x * sigmoid(fc2(relu(fc1(avgpool(x)))))`` with bias-free 1x1 convs.

    Keys: ``fc1.weight`` (C/r, C, 1, 1), ``fc2.weight`` (C, C/r, 1, 1). Input/output (B, C, H, W).
    """

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = channels // reduction
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1, bias=False)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = F.adaptive_avg_pool2d(x, 1)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(gate))))
        return x * gate


class BottleneckIR(nn.Module):
    """Pre-activation IR unit: ``res_layer(x) + shortcut(x)``; spatial size divided by ``stride``.

    ``res_layer`` = [BN(in), conv3x3(in→out), PReLU(out), conv3x3(out→out, stride), BN(out)] (+ SE in IR-SE).
    The shortcut is a strided identity (max-pool of kernel 1) when ``in == out``, else [conv1x1(stride), BN].
    Input (B, in, H, W) → output (B, out, H/stride, W/stride).
    """

    use_se: bool = False

    def __init__(self, in_channels: int, out_channels: int, stride: int, se_reduction: int = 16) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        if in_channels == out_channels:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(kernel_size=1, stride=stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        layers: list[nn.Module] = [
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False),
            nn.PReLU(out_channels),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if self.use_se:
            layers.append(SEModule(out_channels, se_reduction))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class BottleneckIRSE(BottleneckIR):
    """IR unit whose residual branch ends with a squeeze-excitation block (``res_layer.5``)."""

    use_se = True


def build_input_layer(cfg: IRSEConfig) -> nn.Sequential:
    """``[conv3x3(input_channels → channels[0], no bias), BN, PReLU]``, stride 1."""
    c = cfg.channels[0]
    return nn.Sequential(
        nn.Conv2d(cfg.input_channels, c, kernel_size=3, stride=1, padding=1, bias=False),
        nn.BatchNorm2d(c),
        nn.PReLU(c),
    )


def build_units(cfg: IRSEConfig) -> nn.Sequential:
    """All residual units, flattened into one ``Sequential`` (``body.0 … body.{num_units-1}``)."""
    unit_cls = BottleneckIRSE if cfg.mode == "ir_se" else BottleneckIR
    units: list[nn.Module] = []
    in_ch = cfg.channels[0]
    for n_units, out_ch in zip(cfg.units, cfg.channels, strict=True):
        for i in range(n_units):
            units.append(unit_cls(in_ch, out_ch, 2 if i == 0 else 1, cfg.se_reduction))
            in_ch = out_ch
    return nn.Sequential(*units)


def run_units(
    body: nn.Sequential, x: torch.Tensor, taps: Iterable[int] = ()
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Run ``body`` on ``x``; return the final output and ``{index: output of body[index]}`` for each tap."""
    wanted = set(taps)
    tapped: dict[int, torch.Tensor] = {}
    for i, unit in enumerate(body):
        x = unit(x)
        if i in wanted:
            tapped[i] = x
    return x, tapped


def check_image_batch(x: torch.Tensor, channels: int, size: int | None, what: str) -> None:
    """Raise :class:`InputImageError` unless ``x`` is (B, channels, size, size); ``size=None``: any H, W."""
    if x.ndim != 4 or x.shape[1] != channels or (size is not None and tuple(x.shape[2:]) != (size, size)):
        want = f"(B, {channels}, {size}, {size})" if size is not None else f"(B, {channels}, H, W)"
        raise InputImageError(f"{what} expects a tensor of shape {want}, got {tuple(x.shape)}; resize or fix the input")


class IRSEBody(nn.Module):
    """IR / IR-SE feature extractor: ``input_layer`` + ``body`` units, no head.

    Input (B, input_channels, H, W), H and W divisible by 16 → output (B, channels[3], H/16, W/16).
    """

    def __init__(self, cfg: IRSEConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg if cfg is not None else IRSEConfig.official()
        self.input_layer = build_input_layer(self.cfg)
        self.body = build_units(self.cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, self.cfg.input_channels, None, "IRSEBody")
        return self.body(self.input_layer(x))

    def forward_taps(self, x: torch.Tensor, taps: Iterable[int]) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Final features plus the outputs of the requested ``body`` indices."""
        check_image_batch(x, self.cfg.input_channels, None, "IRSEBody")
        return run_units(self.body, self.input_layer(x), taps)


class IRSEBackbone(nn.Module):
    """ArcFace / CurricularFace face-recognition network returning L2-normalised embeddings.

    Keys: ``input_layer.*``, ``body.*``, ``output_layer.{0 BN2d, 1 Dropout, 2 Flatten, 3 Linear, 4 BN1d}``,
    so ``model_ir_se50.pth`` (:meth:`IRSEBackboneConfig.arcface_ir_se50`) and ``CurricularFace_Backbone.pth``
    (:meth:`IRSEBackboneConfig.curricularface_ir101`) load by name.

    Input: (B, 3, input_size, input_size) aligned face crops, normalised to [-1, 1].
    Output: (B, embedding_dim) with unit L2 norm.
    """

    def __init__(self, cfg: IRSEBackboneConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg if cfg is not None else IRSEBackboneConfig.official()
        body_cfg = self.cfg.body
        c = body_cfg.channels[3]
        s = self.cfg.feature_size
        self.input_layer = build_input_layer(body_cfg)
        self.body = build_units(body_cfg)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(c),
            nn.Dropout(self.cfg.dropout),
            nn.Flatten(),
            nn.Linear(c * s * s, self.cfg.embedding_dim),
            nn.BatchNorm1d(self.cfg.embedding_dim, affine=self.cfg.bn1d_affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, self.cfg.body.input_channels, self.cfg.input_size, "IRSEBackbone")
        feats = self.body(self.input_layer(x))
        return F.normalize(self.output_layer(feats), p=2.0, dim=1)
