"""TriPlaneNet v1: pSp first branch (image -> W+) and a U-Net second branch (residual -> tri-plane offsets).

Attribute names match the official module (``psp_encoder``, ``triplanenet_encoder``, ``decoder``), so the official
``triplanenet_final.pth`` state dict loads by name. ``latent_avg`` is a non-persistent buffer (the official checkpoint
does not store it; it comes from the generator file).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from triplanenet.eg3d.config import GeneratorConfig
from triplanenet.eg3d.generator import SynthesisOutput, TriPlaneGenerator
from triplanenet.encoders.config import PSPEncoderConfig, TriPlaneEncoderConfig
from triplanenet.encoders.psp import GradualStyleEncoder
from triplanenet.encoders.triplane_unet import TriPlaneEncoder
from triplanenet.errors import ConfigError, InputImageError


@dataclass(frozen=True)
class TriPlaneNetConfig:
    """Sizes of the three parts. Defaults: the official v1 model on EG3D ``ffhq512-128``."""

    generator: GeneratorConfig = field(default_factory=GeneratorConfig.ffhq512)
    psp: PSPEncoderConfig = field(default_factory=PSPEncoderConfig.official)
    triplane: TriPlaneEncoderConfig = field(default_factory=TriPlaneEncoderConfig.official)

    def __post_init__(self) -> None:
        gen, psp, tri = self.generator, self.psp, self.triplane
        if psp.n_styles != gen.num_ws or psp.w_dim != gen.w_dim:
            raise ConfigError(
                f"pSp encoder predicts {psp.n_styles}x{psp.w_dim} codes but the generator needs "
                f"{gen.num_ws}x{gen.w_dim}"
            )
        if tri.out_channels != gen.backbone_channels or tri.input_resolution != gen.backbone_resolution:
            raise ConfigError(
                f"tri-plane encoder outputs {tri.out_channels}x{tri.input_resolution}² offsets but the generator's "
                f"planes are {gen.backbone_channels}x{gen.backbone_resolution}²"
            )
        if psp.input_resolution != tri.input_resolution:
            raise ConfigError("the pSp and tri-plane encoders must take the same input resolution")

    @property
    def input_resolution(self) -> int:
        """Side of the encoder input images (256 for the official model)."""
        return self.psp.input_resolution

    @classmethod
    def official(cls, generator: GeneratorConfig | None = None) -> TriPlaneNetConfig:
        return cls(generator=generator or GeneratorConfig.ffhq512())

    @classmethod
    def tiny(cls, variant: str = "official_v1", generator: GeneratorConfig | None = None) -> TriPlaneNetConfig:
        """Small encoders (tiny IR-SE bodies) sized for ``generator`` (default: the tiny generator)."""
        gen = generator or GeneratorConfig.tiny()
        res = gen.backbone_resolution
        return cls(
            generator=gen,
            psp=PSPEncoderConfig.tiny(n_styles=gen.num_ws, w_dim=gen.w_dim, input_resolution=res),
            triplane=TriPlaneEncoderConfig.tiny(
                variant,  # type: ignore[arg-type]
                out_channels=gen.backbone_channels,
                plane_channels=gen.backbone_channels,
                input_resolution=res,
            ),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TriPlaneNetConfig:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(
                generator=GeneratorConfig.from_dict(data["generator"]),
                psp=_dataclass_from_dict(PSPEncoderConfig, data["psp"]),
                triplane=_dataclass_from_dict(TriPlaneEncoderConfig, data["triplane"]),
            )
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"invalid TriPlaneNet config: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.to_dict(),
            "psp": dataclasses.asdict(self.psp),
            "triplane": dataclasses.asdict(self.triplane),
        }


def _dataclass_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a (nested) frozen config dataclass from ``dataclasses.asdict`` output (lists become tuples)."""
    values: dict[str, Any] = {}
    hints = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in data.items():
        if key not in hints:
            raise TypeError(f"{cls.__name__} has no field {key!r}")
        default = hints[key].default_factory() if hints[key].default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            values[key] = _dataclass_from_dict(type(default), value)
        elif isinstance(value, list):
            values[key] = tuple(value)
        else:
            values[key] = value
    return cls(**values)


@dataclass
class TriPlaneNetOutput:
    """Result of one TriPlaneNet forward pass (shapes for the official model, B = batch).

    Attributes:
        image: (B, 3, S, S) final render at the target camera, S = 256 when resized (default) else 512; [-1, 1].
        image_psp: (B, 3, S, S) first-branch render at the input camera (what the second branch corrects).
        image_raw: (B, 3, 128, 128) final low-resolution volume render.
        depth: (B, 1, 128, 128) final depth (distance along rays).
        ws: (B, 14, 512) W+ codes including ``latent_avg`` (carries gradient to the pSp encoder).
        offsets: (B, 96, 256, 256) tri-plane offsets of the last refinement.
        synthesis: the full final :class:`SynthesisOutput` (planes, weights, 512² image).
    """

    image: torch.Tensor
    image_psp: torch.Tensor
    image_raw: torch.Tensor
    depth: torch.Tensor
    ws: torch.Tensor
    offsets: torch.Tensor
    synthesis: SynthesisOutput

    def __getitem__(self, key: str) -> torch.Tensor:
        return getattr(self, key)


class TriPlaneNet(nn.Module):
    """Two-branch encoder around a frozen EG3D generator (``decoder``)."""

    def __init__(self, config: TriPlaneNetConfig | None = None, generator: TriPlaneGenerator | None = None) -> None:
        super().__init__()
        self.config = config or TriPlaneNetConfig()
        if generator is not None and generator.config != self.config.generator:
            raise ConfigError("the generator's config differs from TriPlaneNetConfig.generator")
        self.psp_encoder = GradualStyleEncoder(self.config.psp)
        self.triplanenet_encoder = TriPlaneEncoder(self.config.triplane)
        self.decoder = generator if generator is not None else TriPlaneGenerator(self.config.generator)
        self.decoder.eval().requires_grad_(False)
        gen = self.config.generator
        self.register_buffer("latent_avg", torch.zeros(gen.num_ws, gen.w_dim), persistent=False)

    def train(self, mode: bool = True) -> TriPlaneNet:
        """Encoders follow ``mode``; the generator stays in eval mode (it is frozen)."""
        super().train(mode)
        self.decoder.eval()
        return self

    def set_latent_avg(self, latent_avg: torch.Tensor) -> None:
        """Set the average code (w_dim,) or (num_ws, w_dim) that pSp predictions are relative to."""
        gen = self.config.generator
        if latent_avg.shape == (gen.w_dim,):
            latent_avg = latent_avg.unsqueeze(0).repeat(gen.num_ws, 1)
        if latent_avg.shape != (gen.num_ws, gen.w_dim):
            raise ConfigError(f"latent_avg must have shape ({gen.w_dim},) or ({gen.num_ws}, {gen.w_dim})")
        self.latent_avg.copy_(latent_avg.to(self.latent_avg))

    # ----------------------------------------------------------------------------------------------------------------
    def encode_ws(self, x: torch.Tensor) -> torch.Tensor:
        """First branch: images (B, 3, 256, 256) in [-1, 1] -> W+ codes (B, num_ws, w_dim), ``latent_avg`` included."""
        return self.psp_encoder(x) + self.latent_avg.unsqueeze(0)

    def pool_to_input(self, image: torch.Tensor) -> torch.Tensor:
        """Average-pool a render to the encoder input resolution (official: 512² -> 256²)."""
        size = self.config.input_resolution
        if image.shape[-1] == size:
            return image
        return F.adaptive_avg_pool2d(image, (size, size))

    def predict_offsets(
        self, x: torch.Tensor, rendered: torch.Tensor, base_planes: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Second branch: offsets (B, 3·C, R, R) from the input x and a render ŷ of the current estimate (both 256²)."""
        encoder_input = torch.cat([rendered, x - rendered], dim=1)
        if self.config.triplane.variant == "paper":
            if base_planes is None:
                raise ConfigError("the paper variant of the tri-plane encoder needs the first-branch planes")
            flat = base_planes.reshape(base_planes.shape[0], -1, *base_planes.shape[-2:])
            return self.triplanenet_encoder(encoder_input, flat)
        return self.triplanenet_encoder(encoder_input)

    def forward(
        self,
        x: torch.Tensor,
        camera: torch.Tensor,
        target_camera: torch.Tensor | None = None,
        resize: bool = True,
        cttr: bool = False,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> TriPlaneNetOutput:
        """Invert images and render them.

        Args:
            x: (B, 3, 256, 256) aligned face crops in [-1, 1].
            camera: (B, 25) EG3D labels of the inputs.
            target_camera: (B, 25) camera of the final render (novel view); default = ``camera``.
            resize: average-pool the 512² final render to 256² (as the official training/inference does).
            cttr: cascaded test-time refinement: render the refined estimate at the input camera, predict offsets
                again from the new residual (they replace the first ones) and render at the target camera.
            deterministic: deterministic ray sampling (see :meth:`TriPlaneGenerator.synthesis`).
        """
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[-1] != self.config.input_resolution:
            raise InputImageError(
                f"TriPlaneNet expects (B, 3, {self.config.input_resolution}, {self.config.input_resolution}) images, "
                f"got {tuple(x.shape)}"
            )
        target = camera if target_camera is None else target_camera
        render = dict(deterministic=deterministic, generator=generator)
        # 1. First branch: W+ codes and their render at the input camera. The backbone planes are computed once
        #    and reused by the second branch (the official code recomputes them from the detached codes).
        ws = self.encode_ws(x)
        base_planes = self.decoder.planes(ws, noise_mode="const")
        first = self.decoder.render(base_planes, ws, camera, **render)
        image_psp = self.pool_to_input(first.image)
        # 2. Second branch on the detached first-branch result.
        ws_d, planes_d, rendered_d = ws.detach(), base_planes.detach(), image_psp.detach()
        offsets = self.predict_offsets(x, rendered_d, planes_d)
        out = self.decoder.render(planes_d + offsets.view_as(planes_d), ws_d, camera if cttr else target, **render)
        if cttr:
            refined = self.pool_to_input(out.image)
            offsets = self.predict_offsets(x, refined, planes_d)
            out = self.decoder.render(planes_d + offsets.view_as(planes_d), ws_d, target, **render)
        image = self.pool_to_input(out.image) if resize else out.image
        return TriPlaneNetOutput(
            image=image,
            image_psp=image_psp,
            image_raw=out.image_raw,
            depth=out.image_depth,
            ws=ws,
            offsets=offsets,
            synthesis=out,
        )
