"""EG3D ``TriPlaneGenerator``: mapping -> StyleGAN2 tri-planes -> volume rendering -> super-resolution.

The module tree and state-dict keys match the official ``G_ema`` exactly (``backbone.*``, ``superresolution.*``,
``decoder.*``), so official weights load by name. TriPlaneNet's tri-plane offsets are a first-class argument.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from triplanenet.eg3d.config import GeneratorConfig, NoiseMode
from triplanenet.eg3d.rays import generate_rays, split_label
from triplanenet.eg3d.renderer import ImportanceRenderer, run_model
from triplanenet.eg3d.superres import SuperResolution
from triplanenet.eg3d.synthesis import Backbone
from triplanenet.eg3d.triplane import OSGDecoder


@dataclass
class SynthesisOutput:
    """What one rendering of tri-planes produces.

    Attributes:
        image: (B, 3, S, S) super-resolved image, roughly in [-1, 1] (S = ``img_resolution``).
        image_raw: (B, 3, r, r) volume-rendered RGB, in [-1, 1] (r = neural rendering resolution). With the 2X/4X
            super-resolution (``shapenetcars128-64``) rendered at the SR input size it also carries the first SR
            block's RGB, exactly as EG3D returns it (see :meth:`SuperResolution.forward`).
        image_depth: (B, 1, r, r) expected distance along each unit ray, clamped to the sampled depth range.
        feature_image: (B, C, r, r) all rendered feature channels, in [-1, 1] (first 3 = ``image_raw``).
        weight_sum: (B, 1, r, r) accumulated opacity in [0, 1].
        planes: (B, 3, C, R, R) the tri-planes that were rendered (backbone output + offsets).
    """

    image: torch.Tensor
    image_raw: torch.Tensor
    image_depth: torch.Tensor
    feature_image: torch.Tensor
    weight_sum: torch.Tensor
    planes: torch.Tensor

    def __getitem__(self, key: str) -> torch.Tensor:
        """Dict-style access for code written against EG3D's ``synthesis()`` dict."""
        return getattr(self, key)

    def split(self, size: int) -> tuple[SynthesisOutput, ...]:
        """Split every tensor along the batch into chunks of ``size`` (e.g. two cameras rendered in one call)."""
        names = [f.name for f in dataclasses.fields(self)]
        parts = [getattr(self, name).split(size) for name in names]
        return tuple(SynthesisOutput(**dict(zip(names, chunk, strict=True))) for chunk in zip(*parts, strict=True))


class TriPlaneGenerator(nn.Module):
    """EG3D generator built from a :class:`GeneratorConfig`.

    Renderer and ray sampler have no parameters; the plane axes are constants.
    """

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = Backbone(config)
        self.superresolution = SuperResolution(config)
        self.decoder = OSGDecoder(
            n_features=config.triplane_channels,
            hidden_dim=config.decoder_hidden_dim,
            output_dim=config.triplane_channels,
            lr_multiplier=config.rendering.decoder_lr_mul,
        )
        self.renderer = ImportanceRenderer(config.rendering)
        self.neural_rendering_resolution = config.neural_rendering_resolution

    def set_rendering(self, **changes: object) -> None:
        """Change rendering options in place, e.g. ``depth_resolution=96, depth_resolution_importance=96``
        (official inference scripts double the samples)."""
        self.config = self.config.replace(rendering=changes)
        self.renderer = ImportanceRenderer(self.config.rendering, self.renderer.max_points_per_chunk)

    # ----------------------------------------------------------------------------------------------------------------
    @property
    def num_ws(self) -> int:
        return self.backbone.mapping.num_ws

    @property
    def w_avg(self) -> torch.Tensor:
        """(w_dim,) running average of w, the truncation centre."""
        return self.backbone.mapping.w_avg

    def mapping(
        self,
        z: torch.Tensor,
        c: torch.Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
    ) -> torch.Tensor:
        """z (B, z_dim), camera label c (B, 25) -> ws (B, num_ws, w_dim)."""
        rendering = self.config.rendering
        if rendering.c_gen_conditioning_zero:
            c = torch.zeros_like(c)
        return self.backbone.mapping(
            z,
            c * rendering.c_scale,
            truncation_psi=truncation_psi,
            truncation_cutoff=truncation_cutoff,
            update_emas=update_emas,
        )

    def planes(
        self, ws: torch.Tensor, noise_mode: NoiseMode = "const", offsets: torch.Tensor | None = None
    ) -> torch.Tensor:
        """ws (B, num_ws, w_dim) -> tri-planes (B, 3, C, R, R).

        ``offsets`` (B, 3·C, R, R), e.g. TriPlaneNet's second-branch output, are added to the backbone features
        before they are split into planes (channel k belongs to plane k // C).
        """
        features = self.backbone.synthesis(ws, noise_mode=noise_mode)
        if offsets is not None:
            if offsets.shape != features.shape:
                raise ValueError(
                    f"tri-plane offsets must have shape {tuple(features.shape)}, got {tuple(offsets.shape)}"
                )
            features = features + offsets.to(features.dtype)
        batch, _, height, width = features.shape
        return features.view(batch, 3, self.config.triplane_channels, height, width)

    def render(
        self,
        planes: torch.Tensor,
        ws: torch.Tensor,
        c: torch.Tensor,
        neural_rendering_resolution: int | None = None,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
        force_fp32: bool = False,
    ) -> SynthesisOutput:
        """Render tri-planes (B, 3, C, R, R) from cameras c (B, 25); ws supplies the super-resolution styles."""
        resolution = neural_rendering_resolution or self.neural_rendering_resolution
        cam2world, intrinsics = split_label(c)
        origins, directions = generate_rays(cam2world, intrinsics, resolution)
        out = self.renderer(planes, self.decoder, origins, directions, deterministic=deterministic, generator=generator)
        batch = planes.shape[0]
        feature_image = out.features.permute(0, 2, 1).reshape(batch, -1, resolution, resolution).contiguous()
        depth = out.depth.permute(0, 2, 1).reshape(batch, 1, resolution, resolution)
        weight_sum = out.weight_sum.permute(0, 2, 1).reshape(batch, 1, resolution, resolution)
        image_raw = feature_image[:, :3]
        image, raw_rgb = self.superresolution(
            image_raw,
            feature_image,
            ws,
            noise_mode=self.config.rendering.superresolution_noise_mode,
            force_fp32=force_fp32,
        )
        if raw_rgb is not image_raw:  # 2X/4X: EG3D's raw image carries block0's RGB (see SuperResolution.forward)
            image_raw = raw_rgb
            feature_image = torch.cat([raw_rgb.to(feature_image.dtype), feature_image[:, 3:]], dim=1)
        return SynthesisOutput(image, image_raw, depth, feature_image, weight_sum, planes)

    def synthesis(
        self,
        ws: torch.Tensor,
        c: torch.Tensor,
        neural_rendering_resolution: int | None = None,
        noise_mode: NoiseMode = "const",
        triplane_offsets: torch.Tensor | None = None,
        planes: torch.Tensor | None = None,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
        force_fp32: bool = False,
    ) -> SynthesisOutput:
        """ws (B, num_ws, w_dim) + cameras c (B, 25) -> :class:`SynthesisOutput`.

        Args:
            noise_mode: backbone noise. Default ``'const'`` (reproducible; what TriPlaneNet uses). EG3D's own
                default is ``'random'``.
            triplane_offsets: (B, 3·C, R, R) added to the backbone output (TriPlaneNet v1).
            planes: precomputed tri-planes (B, 3, C, R, R); skips the backbone (offsets must then be included).
            deterministic: fixed mid-bin stratified samples and ``det=True`` importance sampling (the parity mode
                of the reference fixtures); otherwise EG3D's stochastic jitter, drawn from ``generator``.
        """
        if planes is None:
            planes = self.planes(ws, noise_mode=noise_mode, offsets=triplane_offsets)
        elif triplane_offsets is not None:
            raise ValueError("pass either planes or triplane_offsets, not both")
        return self.render(
            planes,
            ws,
            c,
            neural_rendering_resolution=neural_rendering_resolution,
            deterministic=deterministic,
            generator=generator,
            force_fp32=force_fp32,
        )

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        **synthesis_kwargs: object,
    ) -> SynthesisOutput:
        """Sample: mapping (conditioned on c) then synthesis at c."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, c, **synthesis_kwargs)  # type: ignore[arg-type]

    def decode(self, planes: torch.Tensor, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (B, M, C) in [-0.001, 1.001] and raw density σ (B, M, 1) at world points coords (B, M, 3)."""
        return run_model(planes, self.decoder, coords, self.config.rendering.box_warp)

    def density(self, planes: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """Raw density σ (B, M, 1) at world points coords (B, M, 3) (before the softplus(σ−1) activation)."""
        return self.decode(planes, coords)[1]
