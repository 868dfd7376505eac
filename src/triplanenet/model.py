"""TriPlaneNet: pSp first branch (image -> W+) and a U-Net second branch (residual -> tri-plane offsets).

One class for both released versions; :attr:`TriPlaneEncoderConfig.version` selects:

* v1 (``triplanenet_final.pth``): the second branch reads ``[ŷ, x − ŷ]``;
* v2, the WACV'24 paper (``triplanenet_v2_final.pth``): the first branch also renders at the mirror camera, and the
  second branch reads ``[ŷ, x − ŷ, x_m − ŷ_m]`` plus the first-branch tri-planes.

Attribute names match the official modules (``psp_encoder``, ``triplanenet_encoder``, ``decoder``), so the official
state dicts load by name. ``latent_avg`` is a non-persistent buffer (the official checkpoints do not store it; it
comes from the generator file).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from triplanenet import limits
from triplanenet.eg3d.camera import mirror_label
from triplanenet.eg3d.config import GeneratorConfig
from triplanenet.eg3d.generator import SynthesisOutput, TriPlaneGenerator
from triplanenet.encoders.config import PSPEncoderConfig, TriPlaneEncoderConfig, TriPlaneNetVersion, Upsampling
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

    @property
    def version(self) -> TriPlaneNetVersion:
        """1 (TriPlaneNet v1) or 2 (TriPlaneNet v2, the paper)."""
        return self.triplane.version

    @classmethod
    def official(cls, generator: GeneratorConfig | None = None) -> TriPlaneNetConfig:
        """The released TriPlaneNet v1 around ``generator`` (default EG3D ``ffhq512-128``)."""
        return cls(generator=generator or GeneratorConfig.ffhq512())

    @classmethod
    def official_v2(
        cls, generator: GeneratorConfig | None = None, upsampling: Upsampling = "nearest"
    ) -> TriPlaneNetConfig:
        """The released TriPlaneNet v2 (nearest-neighbour decoder; ``'pixelshuffle'`` for ``--use_pixelshuffle``)."""
        return cls(
            generator=generator or GeneratorConfig.ffhq512(),
            triplane=TriPlaneEncoderConfig.official_v2(upsampling),
        )

    @classmethod
    def tiny(
        cls,
        version: TriPlaneNetVersion = 1,
        generator: GeneratorConfig | None = None,
        upsampling: Upsampling | None = None,
    ) -> TriPlaneNetConfig:
        """Small encoders (tiny IR-SE bodies) sized for ``generator`` (default: the tiny generator)."""
        gen = generator or GeneratorConfig.tiny()
        res = gen.backbone_resolution
        return cls(
            generator=gen,
            psp=PSPEncoderConfig.tiny(n_styles=gen.num_ws, w_dim=gen.w_dim, input_resolution=res),
            triplane=TriPlaneEncoderConfig.tiny(
                version,
                upsampling,
                out_channels=gen.backbone_channels,
                plane_channels=gen.backbone_channels,
                input_resolution=res,
            ),
        )

    @classmethod
    def compact(
        cls,
        version: TriPlaneNetVersion = 2,
        generator: GeneratorConfig | None = None,
        upsampling: Upsampling | None = None,
    ) -> TriPlaneNetConfig:
        """The bundled default model's sizes: the tiny pSp encoder and a wider second branch
        (:meth:`TriPlaneEncoderConfig.compact`), sized for ``generator`` (default: the tiny generator)."""
        tiny = cls.tiny(version, generator, upsampling)
        gen = tiny.generator
        triplane = TriPlaneEncoderConfig.compact(
            version,
            upsampling,
            out_channels=gen.backbone_channels,
            plane_channels=gen.backbone_channels,
            input_resolution=gen.backbone_resolution,
        )
        return dataclasses.replace(tiny, triplane=triplane)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TriPlaneNetConfig:
        """Inverse of :meth:`to_dict`.

        Raises:
            ConfigError: not a dict of the three parts, or a size of the wrong type or beyond
                :mod:`triplanenet.limits` (checked before anything is allocated).
        """
        if not isinstance(data, dict):
            raise ConfigError(f"the TriPlaneNet config must be a JSON object, got {limits.shown(data)}")
        try:
            return cls(
                generator=GeneratorConfig.from_dict(data["generator"]),
                psp=_dataclass_from_dict(PSPEncoderConfig, data["psp"]),
                triplane=_dataclass_from_dict(TriPlaneEncoderConfig, _upgrade_triplane_dict(data["triplane"])),
            )
        except ConfigError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"invalid TriPlaneNet config: {limits.shown_error(exc)}") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.to_dict(),
            "psp": dataclasses.asdict(self.psp),
            "triplane": dataclasses.asdict(self.triplane),
        }


def _upgrade_triplane_dict(data: dict[str, Any]) -> dict[str, Any]:
    """Configs written before v2 support name the layout ``variant = 'official_v1'``; that is version 1 with
    PixelShuffle. The former ``'paper'`` guess matches no release and cannot be read."""
    if "variant" not in data:
        return data
    values = {k: v for k, v in data.items() if k != "variant"}
    if data["variant"] != "official_v1":
        raise ConfigError(
            f"tri-plane encoder variant {data['variant']!r} is no longer supported (it matched no released "
            "checkpoint); retrain with version 2, the official v2 layout"
        )
    return {**values, "version": 1, "upsampling": "pixelshuffle"}


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
    """Result of one TriPlaneNet forward pass (shapes for the official models, B = batch, S = 256 when resized
    (default) else 512, r = 128 neural rendering resolution). Images are in about [-1, 1].

    Attributes:
        image: (B, 3, S, S) final render at the input camera (the reconstruction).
        depth: (B, 1, r, r) its depth (distance along the rays).
        image_raw: (B, 3, r, r) its low-resolution volume render.
        image_target: (B, 3, S, S) final render at the target camera (novel view), or None without a target.
        depth_target: (B, 1, r, r) depth at the target camera, or None.
        image_psp: (B, 3, 256, 256) first-branch render at the input camera (what the second branch corrects).
        image_psp_mirror: (B, 3, 256, 256) first-branch render at the mirror camera (v2), or None (v1).
        ws: (B, 14, 512) W+ codes including ``latent_avg`` (carries gradient to the pSp encoder).
        offsets: (B, 96, 256, 256) second-branch residual of the last refinement (planes = backbone + offsets).
        planes: (B, 3, 32, 256, 256) final tri-planes (what the official v2 encoder returns, reshaped).
        synthesis: the full final :class:`SynthesisOutput` at the input camera (planes, opacity, 512² image).
        synthesis_target: the same at the target camera, or None.
    """

    image: torch.Tensor
    depth: torch.Tensor
    image_raw: torch.Tensor
    image_target: torch.Tensor | None
    depth_target: torch.Tensor | None
    image_psp: torch.Tensor
    image_psp_mirror: torch.Tensor | None
    ws: torch.Tensor
    offsets: torch.Tensor
    planes: torch.Tensor
    synthesis: SynthesisOutput
    synthesis_target: SynthesisOutput | None

    def __getitem__(self, key: str) -> torch.Tensor | None:
        return getattr(self, key)


TargetCamera = torch.Tensor | Literal["mirror"] | None


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

    @property
    def version(self) -> TriPlaneNetVersion:
        """1 or 2 (see the module docstring)."""
        return self.config.version

    @property
    def uses_mirror(self) -> bool:
        """Whether the second branch reads the mirror view (v2)."""
        return self.config.version == 2

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
        self,
        x: torch.Tensor,
        rendered: torch.Tensor,
        base_planes: torch.Tensor | None = None,
        x_mirror: torch.Tensor | None = None,
        rendered_mirror: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Second branch: offsets (B, 3·C, R, R) from the input x and a render ŷ of the current estimate (256²).

        v2 also needs ``base_planes`` (B, 3, C, R, R) and ``rendered_mirror`` (the estimate at the mirror camera);
        ``x_mirror`` defaults to ``x.flip(-1)``.
        """
        if not self.uses_mirror:
            return self.triplanenet_encoder(torch.cat([rendered, x - rendered], dim=1))
        if base_planes is None or rendered_mirror is None:
            raise ConfigError("TriPlaneNet v2's second branch needs the first-branch planes and the mirror render")
        mirrored = x.flip(-1) if x_mirror is None else x_mirror
        encoder_input = torch.cat([rendered, x - rendered, mirrored - rendered_mirror], dim=1)
        flat = base_planes.reshape(base_planes.shape[0], -1, *base_planes.shape[-2:])
        return self.triplanenet_encoder(encoder_input, flat)

    def render_pair(
        self,
        planes: torch.Tensor,
        ws: torch.Tensor,
        camera: torch.Tensor,
        other_camera: torch.Tensor | None,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[SynthesisOutput, SynthesisOutput | None]:
        """Render tri-planes (B, 3, C, R, R) at ``camera`` and, in the same batched call, at ``other_camera``."""
        if other_camera is None:
            return self.decoder.render(planes, ws, camera, deterministic=deterministic, generator=generator), None
        both = self.decoder.render(
            torch.cat([planes, planes]),
            torch.cat([ws, ws]),
            torch.cat([camera, other_camera.to(camera)]),
            deterministic=deterministic,
            generator=generator,
        )
        first, second = both.split(planes.shape[0])
        return first, second

    def refine_offsets(
        self,
        x: torch.Tensor,
        ws: torch.Tensor,
        planes: torch.Tensor,
        camera: torch.Tensor,
        x_mirror: torch.Tensor | None = None,
        camera_mirror: torch.Tensor | None = None,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Render an estimate (planes (B, 3, C, R, R), codes ws) at ``camera`` (and the mirror camera for v2), then
        run the second branch on it: its output (B, 3·C, R, R). v2 corrects the planes it reads (result: ``planes``
        + output); v1 reads only the render and its output is added to the backbone planes."""
        mirror_camera = (mirror_label(camera) if camera_mirror is None else camera_mirror) if self.uses_mirror else None
        out, out_mirror = self.render_pair(planes, ws, camera, mirror_camera, deterministic, generator)
        rendered_mirror = None if out_mirror is None else self.pool_to_input(out_mirror.image)
        return self.predict_offsets(x, self.pool_to_input(out.image), planes, x_mirror, rendered_mirror)

    def forward(
        self,
        x: torch.Tensor,
        camera: torch.Tensor,
        target_camera: TargetCamera = None,
        resize: bool = True,
        cttr: bool = False,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
        *,
        x_mirror: torch.Tensor | None = None,
        camera_mirror: torch.Tensor | None = None,
    ) -> TriPlaneNetOutput:
        """Invert images and render them.

        Args:
            x: (B, 3, 256, 256) aligned face crops in [-1, 1].
            camera: (B, 25) EG3D labels of the inputs.
            target_camera: (B, 25) camera of an extra final render (novel view), ``"mirror"`` for the mirror camera
                (what the official v2 forward renders when given no novel camera), or None for none.
            resize: average-pool the 512² final renders to 256² (as the official training/inference does).
            cttr: cascaded test-time refinement: render the refined estimate at the input camera (and, v2, the
                mirror camera), predict offsets again from the new residual (they replace the first ones).
                Official for v1; our extension for v2.
            deterministic: deterministic ray sampling (see :meth:`TriPlaneGenerator.synthesis`).
            x_mirror: v2: the mirror image (B, 3, 256, 256); default ``x.flip(-1)``.
            camera_mirror: v2: the mirror camera (B, 25); default :func:`~triplanenet.eg3d.camera.mirror_label`.
        """
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[-1] != self.config.input_resolution:
            raise InputImageError(
                f"TriPlaneNet expects (B, 3, {self.config.input_resolution}, {self.config.input_resolution}) images, "
                f"got {tuple(x.shape)}"
            )
        render = dict(deterministic=deterministic, generator=generator)
        if self.uses_mirror or isinstance(target_camera, str):
            camera_mirror = mirror_label(camera) if camera_mirror is None else camera_mirror
        if isinstance(target_camera, str):
            if target_camera != "mirror":
                raise ConfigError(f"target_camera must be a (B, 25) tensor, 'mirror' or None, got {target_camera!r}")
            target_camera = camera_mirror
        # 1. First branch: W+ codes and their render at the input camera (v2: and at the mirror camera, same call).
        #    The backbone planes are computed once and reused by the second branch (the official code recomputes
        #    them from the detached codes).
        ws = self.encode_ws(x)
        base_planes = self.decoder.planes(ws, noise_mode="const")
        first, first_mirror = self.render_pair(
            base_planes, ws, camera, camera_mirror if self.uses_mirror else None, **render
        )
        image_psp = self.pool_to_input(first.image)
        image_psp_mirror = None if first_mirror is None else self.pool_to_input(first_mirror.image)
        # 2. Second branch on the detached first-branch result.
        ws_d, planes_d = ws.detach(), base_planes.detach()
        offsets = self.predict_offsets(
            x,
            image_psp.detach(),
            planes_d,
            x_mirror,
            None if image_psp_mirror is None else image_psp_mirror.detach(),
        )
        if cttr:
            refined = planes_d + offsets.view_as(planes_d)
            again = self.refine_offsets(x, ws_d, refined, camera, x_mirror, camera_mirror, **render)
            offsets = offsets + again if self.uses_mirror else again
        planes = planes_d + offsets.view_as(planes_d)
        out, out_target = self.render_pair(planes, ws_d, camera, target_camera, **render)
        pool = self.pool_to_input if resize else (lambda image: image)
        return TriPlaneNetOutput(
            image=pool(out.image),
            depth=out.image_depth,
            image_raw=out.image_raw,
            image_target=None if out_target is None else pool(out_target.image),
            depth_target=None if out_target is None else out_target.image_depth,
            image_psp=image_psp,
            image_psp_mirror=image_psp_mirror,
            ws=ws,
            offsets=offsets,
            planes=planes,
            synthesis=out,
            synthesis_target=out_target,
        )
