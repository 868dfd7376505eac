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

from triplanenet import limits
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


@dataclass(frozen=True)
class SuperResolutionSpec:
    """What tells EG3D's super-resolution classes apart (two StyleGAN2 skip blocks each).

    ``scale`` 4: both blocks double the resolution (input = output / 4). ``scale`` 2: the first block keeps the input
    resolution (no upsampling of features or skip image), the second doubles it (input = output / 2).
    """

    img_resolution: int
    """Output side the class is written for (the official constructor asserts it)."""
    scale: int
    """Output side / input side."""
    channels: tuple[int, int]
    """Output channels of block0 and block1 (hard-wired in the class)."""
    filter_buffer: bool
    """The class registers an (unused) ``resample_filter`` buffer of its own, so it is in the state dict."""


SR_MODULES: dict[str, SuperResolutionSpec] = {
    "SuperresolutionHybrid8XDC": SuperResolutionSpec(512, 4, (256, 128), False),
    "SuperresolutionHybrid8X": SuperResolutionSpec(512, 4, (128, 64), True),
    "SuperresolutionHybrid4X": SuperResolutionSpec(256, 2, (128, 64), True),
    "SuperresolutionHybrid2X": SuperResolutionSpec(128, 2, (128, 64), True),
}
"""The EG3D super-resolution classes this implementation builds, by class name."""


def sr_module_spec(sr_module: str) -> SuperResolutionSpec | None:
    """The :class:`SuperResolutionSpec` of an official class path (any module prefix), or None if unknown."""
    return SR_MODULES.get(sr_module.rsplit(".", 1)[-1])


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
        limits.config_int(self.depth_resolution, "depth_resolution", minimum=0, limit=limits.DEPTH_SAMPLES)
        limits.config_int(
            self.depth_resolution_importance, "depth_resolution_importance", minimum=0, limit=limits.DEPTH_SAMPLES
        )
        for name in ("ray_start", "ray_end", "box_warp", "density_noise", "c_scale", "decoder_lr_mul"):
            limits.config_float(getattr(self, name), name)
        limits.config_float(self.avg_camera_radius, "avg_camera_radius")
        if not isinstance(self.avg_camera_pivot, tuple) or len(self.avg_camera_pivot) != 3:
            raise ConfigError(f"avg_camera_pivot must be 3 numbers, got {self.avg_camera_pivot!r:.60}; fix the config")
        for value in self.avg_camera_pivot:
            limits.config_float(value, "avg_camera_pivot")
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
    """Channels of the two super-resolution blocks (hard-wired per official class: 256/128 in 8XDC, 128/64 in 2X)."""
    sr_scale: int = 4
    """Upsampling factor of the super-resolution module: 4 (8X/8XDC: both blocks upsample) or 2 (2X/4X: the first
    block works at the input resolution)."""
    decoder_hidden_dim: int = 64
    """Hidden width of the OSG decoder MLP."""
    neural_rendering_resolution: int = 128
    """Side of the volume-rendered feature image (input of the super-resolution module)."""
    rendering: RenderingConfig = field(default_factory=RenderingConfig)
    """Ray sampling and compositing options."""
    sr_module: str = OFFICIAL_SR_MODULE
    """Official class path of the super-resolution module (kept for round trips)."""

    def __post_init__(self) -> None:
        self._check_sizes()
        if self.img_resolution < 4 * 4:
            raise ConfigError(f"img_resolution must be at least 16, got {self.img_resolution}")
        if self.sr_scale not in (2, 4):
            raise ConfigError(f"sr_scale must be 2 or 4, got {self.sr_scale}")

    def _check_sizes(self) -> None:
        """Every size is a plain integer within :mod:`triplanenet.limits`, and the estimated parameter count fits,
        so a config read from a file cannot make the model allocate more than the machine has."""
        width, depth = limits.MODEL_WIDTH, limits.MODEL_DEPTH
        for name in ("img_resolution", "backbone_resolution", "neural_rendering_resolution"):
            limits.config_power_of_two(getattr(self, name), name, 4)
        for name in ("z_dim", "w_dim", "img_channels", "triplane_channels", "channel_max", "decoder_hidden_dim"):
            limits.config_int(getattr(self, name), name, limit=width)
        limits.config_int(self.c_dim, "c_dim", minimum=0, limit=width)
        limits.config_int(self.mapping_layers, "mapping_layers", limit=depth)
        limits.config_int(self.num_fp16_res, "num_fp16_res", minimum=0, limit=depth)
        limits.config_int(self.sr_num_fp16_res, "sr_num_fp16_res", minimum=0, limit=depth)
        limits.config_int(self.sr_scale, "sr_scale")
        base_limit = limits.Limit(
            f"(= {limits.MODEL_WIDTH.env} x {limits.MODEL_RESOLUTION.env})",
            limits.MODEL_WIDTH.env,
            width.value() * limits.MODEL_RESOLUTION.value(),
        )
        limits.config_int(self.channel_base, "channel_base", limit=base_limit)
        if not isinstance(self.sr_channels, tuple) or len(self.sr_channels) != 2:
            raise ConfigError(f"sr_channels must be 2 integers, got {self.sr_channels!r:.60}; fix the config")
        for value in self.sr_channels:
            limits.config_int(value, "sr_channels", limit=width)
        if self.conv_clamp is not None and limits.config_float(self.conv_clamp, "conv_clamp") <= 0:
            raise ConfigError(f"conv_clamp must be positive or null, got {self.conv_clamp}; fix the config")
        limits.MODEL_PARAMETERS.check(self.parameter_estimate(), "the generator config's parameter count")

    def parameter_estimate(self) -> int:
        """About how many parameters the generator has (the mapping, backbone and decoder weights; the fixed-width
        super-resolution blocks add a few million). Only used to refuse absurd configs before allocating."""
        w = self.w_dim
        total = (self.z_dim + self.c_dim) * w + self.mapping_layers * w * w
        res, previous = 4, self.channels_at(4)
        while res <= self.backbone_resolution:
            ch = self.channels_at(res)
            total += 9 * previous * ch + 9 * ch * ch + 3 * w * ch + ch * self.backbone_channels
            previous, res = ch, res * 2
        hidden = self.decoder_hidden_dim
        total += self.triplane_channels * hidden + hidden * (1 + 32)
        total += 9 * sum(c * c for c in self.sr_channels) * 2 + 3 * w * sum(self.sr_channels)
        return total

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
        return self.img_resolution // self.sr_scale

    @property
    def sr_filter_buffer(self) -> bool:
        """Whether the super-resolution module owns a ``resample_filter`` buffer (every official class but 8XDC)."""
        spec = sr_module_spec(self.sr_module)
        return spec is not None and spec.filter_buffer

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
    def ffhq512(cls, neural_rendering_resolution: int = 128) -> GeneratorConfig:
        """The official ``ffhq512-128`` architecture (``ffhq512-64`` with ``neural_rendering_resolution=64``)."""
        return cls(neural_rendering_resolution=neural_rendering_resolution)

    @classmethod
    def ffhqrebalanced512(cls, neural_rendering_resolution: int = 128) -> GeneratorConfig:
        """The official ``ffhqrebalanced512-128`` / ``-64`` architecture: FFHQ's, fine-tuned with
        ``gpc_reg_prob`` 0.8 (a training-only key, kept for round trips)."""
        return cls(
            neural_rendering_resolution=neural_rendering_resolution,
            rendering=RenderingConfig(extra={"gpc_reg_prob": 0.8}),
        )

    @classmethod
    def afhqcats512(cls) -> GeneratorConfig:
        """The official ``afhqcats512-128`` architecture: FFHQ's with the camera pivot at (0, 0, -0.06)."""
        return cls(rendering=RenderingConfig(avg_camera_pivot=(0.0, 0.0, -0.06), extra={"gpc_reg_prob": 0.8}))

    @classmethod
    def shapenet128(cls) -> GeneratorConfig:
        """The official ``shapenetcars128-64`` architecture: 128² output from a 64² neural rendering through
        ``SuperresolutionHybrid2X``, white background, a 1.6 box, rays 0.1…2.6 with 64 + 64 samples and no camera
        conditioning of the mapping."""
        return cls(
            img_resolution=128,
            sr_channels=(128, 64),
            sr_scale=2,
            neural_rendering_resolution=64,
            sr_module="training.superresolution.SuperresolutionHybrid2X",
            rendering=RenderingConfig(
                depth_resolution=64,
                depth_resolution_importance=64,
                ray_start=0.1,
                ray_end=2.6,
                box_warp=1.6,
                white_back=True,
                c_gen_conditioning_zero=True,
                avg_camera_radius=1.7,
                avg_camera_pivot=(0.0, 0.0, 0.0),
            ),
        )

    @classmethod
    def official(cls, release: str) -> GeneratorConfig:
        """The architecture of an official EG3D release by its file stem, e.g. ``'shapenetcars128-64'``.

        Raises:
            ConfigError: not one of :data:`OFFICIAL_RELEASES`.
        """
        name = release.removeprefix("eg3d-").removesuffix(".pkl")
        if name not in OFFICIAL_RELEASES:
            raise ConfigError(f"unknown EG3D release {release!r}; known: {', '.join(OFFICIAL_RELEASES)}")
        return OFFICIAL_RELEASES[name]()

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

        The super-resolution class named in ``rendering_kwargs.superresolution_module`` fixes the SR channels and
        scale; without ``neural_rendering_resolution`` the SR module's input side is used (128 for the 512² releases,
        as TriPlaneNet renders; 64 for ``shapenetcars128-64``).

        Raises:
            ConfigError: the kwargs describe an architecture this implementation does not support, or a value of
                the wrong type or beyond :mod:`triplanenet.limits` (checked before anything is allocated).
        """
        try:
            return cls._from_official_kwargs(init_kwargs, neural_rendering_resolution)
        except ConfigError:
            raise
        except (TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"invalid EG3D init_kwargs: {limits.shown_error(exc)}") from None

    @classmethod
    def _from_official_kwargs(
        cls, init_kwargs: dict[str, Any], neural_rendering_resolution: int | None
    ) -> GeneratorConfig:
        kw = dict(init_kwargs)
        rk = dict(kw.get("rendering_kwargs") or {})
        sr_module = str(rk.get("superresolution_module", OFFICIAL_SR_MODULE))
        spec = sr_module_spec(sr_module)
        if spec is None:
            raise ConfigError(
                f"unsupported super-resolution module {sr_module!r}; implemented: "
                f"{', '.join(SR_MODULES)} (every official EG3D release)"
            )
        img_resolution = limits.config_power_of_two(kw.get("img_resolution", 512), "img_resolution", 4)
        if img_resolution != spec.img_resolution:
            raise ConfigError(
                f"{sr_module.rsplit('.', 1)[-1]} makes {spec.img_resolution}² images but img_resolution is "
                f"{img_resolution}; the init_kwargs are inconsistent"
            )
        img_channels = limits.config_int(kw.get("img_channels", 3), "img_channels")
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
                z_dim=kw.get("z_dim", 512),
                c_dim=kw.get("c_dim", 25),
                w_dim=kw.get("w_dim", 512),
                img_resolution=img_resolution,
                img_channels=img_channels,
                mapping_layers=mapping_kwargs.get("num_layers", 8),
                channel_base=kw.get("channel_base", 32768),
                channel_max=kw.get("channel_max", 512),
                num_fp16_res=kw.get("num_fp16_res", 4),
                conv_clamp=kw.get("conv_clamp"),
                sr_num_fp16_res=kw.get("sr_num_fp16_res", 0),
                sr_channels=spec.channels,
                sr_scale=spec.scale,
                neural_rendering_resolution=int(neural_rendering_resolution or spec.img_resolution // spec.scale),
                rendering=rendering,
                sr_module=sr_module,
            )
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid EG3D init_kwargs: {limits.shown_error(exc)}") from None

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
        if not isinstance(data, dict):
            raise ConfigError(f"the generator config must be a JSON object, got {limits.shown(data)}")
        try:
            values = dict(data)
            rendering = dict(values.pop("rendering", {}))
            if "avg_camera_pivot" in rendering:
                rendering["avg_camera_pivot"] = tuple(rendering["avg_camera_pivot"])
            if "sr_channels" in values:
                values["sr_channels"] = tuple(values["sr_channels"])
            return cls(**values, rendering=RenderingConfig(**rendering))
        except ConfigError:
            raise
        except (TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"invalid generator config: {limits.shown_error(exc)}") from None


OFFICIAL_RELEASES: dict[str, Any] = {
    "ffhq512-128": GeneratorConfig.ffhq512,
    "ffhqrebalanced512-128": GeneratorConfig.ffhqrebalanced512,
    "ffhqrebalanced512-64": lambda: GeneratorConfig.ffhqrebalanced512(neural_rendering_resolution=64),
    "afhqcats512-128": GeneratorConfig.afhqcats512,
    "shapenetcars128-64": GeneratorConfig.shapenet128,
}
"""The five EG3D releases on NVIDIA's NGC catalogue -> a zero-argument builder of their architecture."""
