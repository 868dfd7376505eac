"""Typed configuration of the EG3D tri-plane generator.

One dataclass describes any size of generator: the official FFHQ-512 model and the tiny models used in tests are
the same code with different numbers. :meth:`GeneratorConfig.from_official_kwargs` and
:meth:`GeneratorConfig.to_official_kwargs` translate to and from the ``init_kwargs`` stored in NVIDIA pickles and in
TriPlaneNet's converted ``.pth`` files.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from triplanenet.errors import ConfigError

NoiseMode = Literal["const", "random", "none"]

# Keys of the official ``rendering_kwargs`` that only matter while training EG3D itself. We keep their values so that
# a converted checkpoint round-trips, but nothing in inference reads them.
_TRAINING_ONLY_RENDERING_KEYS = (
    "gpc_reg_prob",
    "density_reg",
    "density_reg_p_dist",
    "reg_type",
    "image_resolution",
)
OFFICIAL_SR_MODULE = "training.superresolution.SuperresolutionHybrid8XDC"
_KNOWN_SR_MODULES = ("SuperresolutionHybrid8XDC",)


@dataclass(frozen=True)
class RenderingConfig:
    """How rays are sampled and composited (EG3D ``rendering_kwargs``)."""

    depth_resolution: int = 48
    """Stratified (coarse) samples per ray."""
    depth_resolution_importance: int = 48
    """Importance (fine) samples per ray; 0 disables the second pass."""
    ray_start: float = 2.25
    """Near bound, as distance along the unit ray direction."""
    ray_end: float = 3.3
    """Far bound, as distance along the unit ray direction."""
    box_warp: float = 1.0
    """Side length of the cube spanned by the tri-planes, centred at the origin."""
    white_back: bool = False
    """Composite onto white instead of black."""
    density_noise: float = 0.0
    """Std of Gaussian noise added to raw densities (training regulariser; 0 at inference)."""
    clamp_mode: Literal["softplus"] = "softplus"
    """Density activation; EG3D only implements ``softplus(sigma - 1)``."""
    disparity_space_sampling: bool = False
    """Sample coarse depths linearly in disparity instead of depth."""
    c_gen_conditioning_zero: bool = False
    """Zero the camera label before the mapping network."""
    c_scale: float = 1.0
    """Scale of the camera label fed to the mapping network."""
    superresolution_noise_mode: NoiseMode = "none"
    """Noise mode of the super-resolution blocks."""
    sr_antialias: bool = True
    """Antialias the bilinear resize in front of the super-resolution module."""
    decoder_lr_mul: float = 1.0
    """Learning-rate multiplier of the OSG decoder's FC layers."""
    avg_camera_radius: float = 2.7
    """Typical camera distance from the origin (used to build default cameras)."""
    avg_camera_pivot: tuple[float, float, float] = (0.0, 0.0, 0.2)
    """Typical look-at point (used to build default cameras)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Training-only official keys we carry for round trips (``gpc_reg_prob``, ``density_reg``, ...)."""

    def __post_init__(self) -> None:
        if self.clamp_mode != "softplus":
            raise ConfigError(f"clamp_mode must be 'softplus' (the only mode EG3D supports), got {self.clamp_mode!r}")
        if self.depth_resolution < 2:
            raise ConfigError(f"depth_resolution must be at least 2, got {self.depth_resolution}")
        if self.depth_resolution_importance < 0:
            raise ConfigError(f"depth_resolution_importance must be >= 0, got {self.depth_resolution_importance}")
        if self.depth_resolution_importance > 0 and self.depth_resolution < 4:
            raise ConfigError(
                f"importance sampling needs depth_resolution >= 4, got {self.depth_resolution}; "
                "raise it or set depth_resolution_importance=0"
            )
        if not self.ray_end > self.ray_start:
            raise ConfigError(f"ray_end ({self.ray_end}) must be greater than ray_start ({self.ray_start})")
        if self.disparity_space_sampling and self.ray_start <= 0:
            raise ConfigError(f"disparity_space_sampling needs ray_start > 0, got {self.ray_start}")


@dataclass(frozen=True)
class GeneratorConfig:
    """Architecture of an EG3D ``TriPlaneGenerator``.

    Defaults are the official FFHQ 512² model with neural rendering at 128² (``ffhq512-128``).
    """

    z_dim: int = 512
    """Latent z dimension."""
    c_dim: int = 25
    """Camera label dimension (16 cam2world + 9 normalised intrinsics)."""
    w_dim: int = 512
    """Intermediate latent w dimension."""
    img_resolution: int = 512
    """Final (super-resolved) image side."""
    img_channels: int = 3
    """Final image channels."""
    mapping_layers: int = 2
    """FC layers in the mapping network."""
    mapping_lr_multiplier: float = 0.01
    """Learning-rate multiplier of the mapping FC layers (also scales their stored weights)."""
    backbone_resolution: int = 256
    """Side of the tri-planes produced by the StyleGAN2 backbone."""
    triplane_channels: int = 32
    """Feature channels per plane (the backbone outputs 3x this)."""
    channel_base: int = 32768
    """Backbone channels at resolution r are ``min(channel_base // r, channel_max)``."""
    channel_max: int = 512
    """Maximum backbone channels."""
    num_fp16_res: int = 0
    """Backbone resolutions run in fp16 on CUDA (0 for FFHQ)."""
    conv_clamp: float | None = None
    """Backbone activation clamp (None for FFHQ)."""
    sr_num_fp16_res: int = 4
    """>0 makes the super-resolution blocks use fp16 on CUDA and clamp activations at 256 (official behaviour)."""
    sr_channels: tuple[int, int] = (256, 128)
    """Channels of the two super-resolution blocks (hard-wired 256/128 in the official module)."""
    decoder_hidden_dim: int = 64
    """Hidden width of the OSG decoder MLP."""
    neural_rendering_resolution: int = 128
    """Side of the volume-rendered feature image (input of the super-resolution module)."""
    rendering: RenderingConfig = field(default_factory=RenderingConfig)
    """Ray sampling and compositing options."""
    sr_module: str = OFFICIAL_SR_MODULE
    """Official class path of the super-resolution module (kept for round trips)."""

    def __post_init__(self) -> None:
        for name in ("img_resolution", "backbone_resolution", "neural_rendering_resolution"):
            value = getattr(self, name)
            if value < 4 or value & (value - 1):
                raise ConfigError(f"{name} must be a power of two >= 4, got {value}")
        if self.img_resolution < 4 * 4:
            raise ConfigError(f"img_resolution must be at least 16, got {self.img_resolution}")

    # ----------------------------------------------------------------------------------------------------------------
    @property
    def backbone_channels(self) -> int:
        """Output channels of the backbone: three planes of ``triplane_channels``."""
        return 3 * self.triplane_channels

    @property
    def num_ws(self) -> int:
        """Number of w vectors the synthesis consumes (14 for FFHQ-512)."""
        log2 = int(math.log2(self.backbone_resolution))
        return 2 * (log2 - 2) + 2

    @property
    def sr_input_resolution(self) -> int:
        """Side the super-resolution module expects (the feature image is resized to it if needed)."""
        return self.img_resolution // 4

    def channels_at(self, resolution: int) -> int:
        """Backbone channel count at a given resolution."""
        return min(self.channel_base // resolution, self.channel_max)

    def replace(self, **changes: Any) -> GeneratorConfig:
        """Copy with some fields changed; ``rendering`` may be given as a dict of changes."""
        rendering = changes.pop("rendering", None)
        if isinstance(rendering, dict):
            changes["rendering"] = dataclasses.replace(self.rendering, **rendering)
        elif rendering is not None:
            changes["rendering"] = rendering
        return dataclasses.replace(self, **changes)

    # ----------------------------------------------------------------------------------------------------------------
    @classmethod
    def ffhq512(cls) -> GeneratorConfig:
        """The official ``ffhq512-128`` architecture."""
        return cls()

    @classmethod
    def tiny(cls) -> GeneratorConfig:
        """A small random-weight model for tests and CPU demos (128² output, 32² neural rendering)."""
        return cls(
            z_dim=64,
            w_dim=64,
            img_resolution=128,
            backbone_resolution=64,
            triplane_channels=8,
            channel_base=1024,
            channel_max=64,
            sr_channels=(32, 16),
            decoder_hidden_dim=32,
            neural_rendering_resolution=32,
            rendering=RenderingConfig(depth_resolution=12, depth_resolution_importance=12),
        )

    # ----------------------------------------------------------------------------------------------------------------
    @classmethod
    def from_official_kwargs(
        cls, init_kwargs: dict[str, Any], neural_rendering_resolution: int | None = None
    ) -> GeneratorConfig:
        """Build from EG3D ``TriPlaneGenerator`` ``init_kwargs`` (as stored in a pickle or converted ``.pth``).

        Raises:
            ConfigError: the kwargs describe an architecture this implementation does not support.
        """
        kw = dict(init_kwargs)
        rk = dict(kw.get("rendering_kwargs") or {})
        sr_module = str(rk.get("superresolution_module", OFFICIAL_SR_MODULE))
        if not sr_module.endswith(_KNOWN_SR_MODULES):
            raise ConfigError(
                f"unsupported super-resolution module {sr_module!r}; only SuperresolutionHybrid8XDC "
                "(EG3D FFHQ 512) is implemented"
            )
        img_channels = int(kw.get("img_channels", 3))
        if img_channels != 3:
            raise ConfigError(f"img_channels must be 3, got {img_channels}")
        mapping_kwargs = dict(kw.get("mapping_kwargs") or {})
        known = {f.name for f in dataclasses.fields(RenderingConfig)} - {"extra"}
        rendering_values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in rk.items():
            if key == "superresolution_module":
                continue
            if key in known:
                rendering_values[key] = tuple(value) if key == "avg_camera_pivot" else value
            else:
                extra[key] = value
        if "c_scale" not in rk:
            # EG3D multiplies the label by rendering_kwargs.get('c_scale', 0): a missing key zeroes the conditioning.
            rendering_values["c_scale"] = 0.0
        try:
            rendering = RenderingConfig(**rendering_values, extra=extra)
            return cls(
                z_dim=int(kw.get("z_dim", 512)),
                c_dim=int(kw.get("c_dim", 25)),
                w_dim=int(kw.get("w_dim", 512)),
                img_resolution=int(kw.get("img_resolution", 512)),
                img_channels=img_channels,
                mapping_layers=int(mapping_kwargs.get("num_layers", 8)),
                channel_base=int(kw.get("channel_base", 32768)),
                channel_max=int(kw.get("channel_max", 512)),
                num_fp16_res=int(kw.get("num_fp16_res", 4)),
                conv_clamp=kw.get("conv_clamp"),
                sr_num_fp16_res=int(kw.get("sr_num_fp16_res", 0)),
                neural_rendering_resolution=int(neural_rendering_resolution or 64),
                rendering=rendering,
                sr_module=sr_module,
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid EG3D init_kwargs: {exc}") from None

    def to_official_kwargs(self) -> dict[str, Any]:
        """The ``init_kwargs`` dict EG3D's ``TriPlaneGenerator`` would take (plain types only)."""
        r = self.rendering
        rendering_kwargs: dict[str, Any] = dict(r.extra)
        rendering_kwargs.update(
            depth_resolution=r.depth_resolution,
            depth_resolution_importance=r.depth_resolution_importance,
            ray_start=r.ray_start,
            ray_end=r.ray_end,
            box_warp=r.box_warp,
            white_back=r.white_back,
            density_noise=r.density_noise,
            clamp_mode=r.clamp_mode,
            disparity_space_sampling=r.disparity_space_sampling,
            c_gen_conditioning_zero=r.c_gen_conditioning_zero,
            c_scale=r.c_scale,
            superresolution_noise_mode=r.superresolution_noise_mode,
            sr_antialias=r.sr_antialias,
            decoder_lr_mul=r.decoder_lr_mul,
            avg_camera_radius=r.avg_camera_radius,
            avg_camera_pivot=list(r.avg_camera_pivot),
            superresolution_module=self.sr_module,
        )
        return {
            "z_dim": self.z_dim,
            "w_dim": self.w_dim,
            "c_dim": self.c_dim,
            "img_resolution": self.img_resolution,
            "img_channels": self.img_channels,
            "mapping_kwargs": {"num_layers": self.mapping_layers},
            "channel_base": self.channel_base,
            "channel_max": self.channel_max,
            "num_fp16_res": self.num_fp16_res,
            "conv_clamp": self.conv_clamp,
            "sr_num_fp16_res": self.sr_num_fp16_res,
            "rendering_kwargs": rendering_kwargs,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict of every field (our own format)."""
        data = dataclasses.asdict(self)
        data["rendering"]["avg_camera_pivot"] = list(self.rendering.avg_camera_pivot)
        data["sr_channels"] = list(self.sr_channels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GeneratorConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        try:
            values = dict(data)
            rendering = dict(values.pop("rendering", {}))
            if "avg_camera_pivot" in rendering:
                rendering["avg_camera_pivot"] = tuple(rendering["avg_camera_pivot"])
            if "sr_channels" in values:
                values["sr_channels"] = tuple(values["sr_channels"])
            return cls(**values, rendering=RenderingConfig(**rendering))
        except TypeError as exc:
            raise ConfigError(f"invalid generator config: {exc}") from None
