"""Typed configuration of the TriPlaneNet encoders.

Every size is a field, so the official modules (which load the released checkpoints by key name) and the
tiny modules used in tests are the same code with different numbers. Each config has an ``.official()`` preset
(the architecture of the released TriPlaneNet v1 checkpoint) and a ``.tiny()`` preset (small, runs on 64x64
inputs); both accept field overrides as keyword arguments.

The IR / IR-SE backbone is organised in four stages. Stage ``k`` has ``units[k]`` residual units with
``channels[k]`` output channels; the first unit of every stage has stride 2, so the feature map after stage
``k`` has resolution ``input / 2**(k+1)``. The input layer is a stride-1 3x3 conv producing ``channels[0]``
maps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from triplanenet import limits
from triplanenet.errors import ConfigError

IRMode = Literal["ir_se", "ir"]
TriPlaneNetVersion = Literal[1, 2]
Upsampling = Literal["pixelshuffle", "nearest"]

_UNITS_BY_DEPTH: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    152: (3, 8, 36, 3),
}
_OFFICIAL_CHANNELS = (64, 128, 256, 512)


def _is_power_of_two(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0


def _check_positive(name: str, values: tuple[int, ...], limit: limits.Limit = limits.MODEL_WIDTH) -> None:
    """Each value a positive plain integer within ``limit`` (a config read from a file is checked before any tensor
    is allocated)."""
    if not isinstance(values, tuple):
        raise ConfigError(f"{name} must be a list of integers, got {limits.shown(values)}; fix the config")
    for value in values:
        limits.config_int(value, name, limit=limit)


@dataclass(frozen=True)
class IRSEConfig:
    """Architecture of an IR / IR-SE residual body (input layer + ``sum(units)`` bottleneck units).

    Defaults are IR-SE-50 as used by pSp and TriPlaneNet: units (3, 4, 14, 3), channels (64, 128, 256, 512).
    """

    units: tuple[int, int, int, int] = (3, 4, 14, 3)
    """Residual units per stage (IR-50: 3/4/14/3, IR-100: 3/13/30/3, IR-152: 3/8/36/3)."""
    channels: tuple[int, int, int, int] = _OFFICIAL_CHANNELS
    """Output channels of each stage; the input layer outputs ``channels[0]``."""
    mode: IRMode = "ir_se"
    """``'ir_se'``: units end with a squeeze-excitation block (``res_layer.5``); ``'ir'``: plain IR units."""
    se_reduction: int = 16
    """Channel reduction of the squeeze-excitation bottleneck (hidden = channels // reduction)."""
    input_channels: int = 3
    """Channels of the input image tensor (3 for pSp/ArcFace, 6 for the TriPlaneNet v1 U-Net)."""

    def __post_init__(self) -> None:
        if len(self.units) != 4 or len(self.channels) != 4:
            raise ConfigError(
                f"IRSEConfig needs exactly 4 stages, got units={self.units} channels={self.channels}; "
                "give 4 values for each"
            )
        _check_positive("IRSEConfig.units", self.units, limits.MODEL_DEPTH)
        _check_positive("IRSEConfig.channels", self.channels)
        limits.config_int(self.se_reduction, "IRSEConfig.se_reduction", minimum=0, limit=limits.MODEL_WIDTH)
        limits.config_int(self.input_channels, "IRSEConfig.input_channels", minimum=0, limit=limits.MODEL_WIDTH)
        limits.MODEL_PARAMETERS.check(
            sum(2 * 9 * n * c * c for n, c in zip(self.units, self.channels, strict=True)),
            "the IR-SE body's parameter count",
        )
        if self.mode not in ("ir_se", "ir"):
            raise ConfigError(f"IRSEConfig.mode must be 'ir_se' or 'ir', got {self.mode!r}")
        if self.input_channels <= 0:
            raise ConfigError(f"IRSEConfig.input_channels must be positive, got {self.input_channels}")
        if self.mode == "ir_se":
            if self.se_reduction <= 0:
                raise ConfigError(f"IRSEConfig.se_reduction must be positive, got {self.se_reduction}")
            too_small = [c for c in self.channels if c // self.se_reduction < 1]
            if too_small:
                raise ConfigError(
                    f"IRSEConfig: channels {too_small} are smaller than se_reduction={self.se_reduction}; "
                    "lower se_reduction or widen the stages"
                )

    @classmethod
    def from_num_layers(cls, num_layers: int, mode: IRMode = "ir_se", input_channels: int = 3) -> IRSEConfig:
        """The standard InsightFace depths: ``num_layers`` in {50, 100, 152}."""
        if num_layers not in _UNITS_BY_DEPTH:
            raise ConfigError(f"unsupported IR depth num_layers={num_layers}; use one of {sorted(_UNITS_BY_DEPTH)}")
        return cls(units=_UNITS_BY_DEPTH[num_layers], mode=mode, input_channels=input_channels)

    @classmethod
    def official(cls, **overrides: Any) -> IRSEConfig:
        """IR-SE-50 with a 3-channel input (pSp / ArcFace)."""
        return dataclasses.replace(cls(), **overrides)

    @classmethod
    def tiny(cls, **overrides: Any) -> IRSEConfig:
        """A 6-unit IR-SE body with 8..32 channels, for fast tests."""
        base = cls(units=(1, 1, 2, 2), channels=(8, 16, 24, 32), se_reduction=4)
        return dataclasses.replace(base, **overrides)

    @property
    def num_units(self) -> int:
        """Total number of bottleneck units (``len(body)``); 24 for IR-SE-50."""
        return sum(self.units)

    @property
    def stage_last_index(self) -> tuple[int, int, int, int]:
        """Index in ``body`` of the last unit of each stage; (2, 6, 20, 23) for IR-SE-50."""
        ends: list[int] = []
        total = 0
        for n in self.units:
            total += n
            ends.append(total - 1)
        return (ends[0], ends[1], ends[2], ends[3])

    @property
    def stage_first_index(self) -> tuple[int, int, int, int]:
        """Index in ``body`` of the first (stride-2) unit of each stage; (0, 3, 7, 21) for IR-SE-50."""
        last = self.stage_last_index
        return (0, last[0] + 1, last[1] + 1, last[2] + 1)


@dataclass(frozen=True)
class IRSEBackboneConfig:
    """ArcFace-style face-recognition network: IR/IR-SE body + ``output_layer`` → L2-normalised embedding.

    ``output_layer`` = [0 BatchNorm2d(C), 1 Dropout, 2 Flatten, 3 Linear(C·s·s → embedding_dim),
    4 BatchNorm1d(embedding_dim, affine=bn1d_affine)] with ``s = input_size / 16`` and
    ``C = body.channels[-1]``.
    """

    body: IRSEConfig = field(default_factory=IRSEConfig)
    """The residual body (IR-SE-50 by default)."""
    input_size: int = 112
    """Side of the square input face crop (112 for the released ArcFace / CurricularFace weights)."""
    embedding_dim: int = 512
    """Size of the output embedding."""
    dropout: float = 0.4
    """Dropout probability of ``output_layer.1`` (only active in train mode)."""
    bn1d_affine: bool = True
    """Whether the last BatchNorm1d has weight/bias (True: ArcFace IR-SE-50, False: CurricularFace IR-101)."""

    def __post_init__(self) -> None:
        limits.config_int(self.input_size, "IRSEBackboneConfig.input_size", minimum=0, limit=limits.MODEL_RESOLUTION)
        limits.config_int(self.embedding_dim, "IRSEBackboneConfig.embedding_dim", minimum=0, limit=limits.MODEL_WIDTH)
        if self.input_size <= 0 or self.input_size % 16 != 0:
            raise ConfigError(f"IRSEBackboneConfig.input_size must be a positive multiple of 16, got {self.input_size}")
        if self.embedding_dim <= 0:
            raise ConfigError(f"IRSEBackboneConfig.embedding_dim must be positive, got {self.embedding_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"IRSEBackboneConfig.dropout must be in [0, 1), got {self.dropout}")

    @property
    def feature_size(self) -> int:
        """Side of the body's output map (7 for 112 inputs)."""
        return self.input_size // 16

    @classmethod
    def official(cls, **overrides: Any) -> IRSEBackboneConfig:
        """ArcFace IR-SE-50 at 112x112 (``model_ir_se50.pth``, used by the ID loss)."""
        return dataclasses.replace(cls(), **overrides)

    @classmethod
    def arcface_ir_se50(cls, **overrides: Any) -> IRSEBackboneConfig:
        """Alias of :meth:`official`: ``model_ir_se50.pth`` (IR-SE-50, 112 input, affine BatchNorm1d)."""
        return cls.official(**overrides)

    @classmethod
    def curricularface_ir101(cls, **overrides: Any) -> IRSEBackboneConfig:
        """CurricularFace IR-101 (``CurricularFace_Backbone.pth``): plain IR units, non-affine BatchNorm1d."""
        base = cls(body=IRSEConfig.from_num_layers(100, mode="ir"), bn1d_affine=False)
        return dataclasses.replace(base, **overrides)

    @classmethod
    def tiny(cls, **overrides: Any) -> IRSEBackboneConfig:
        """Tiny body, 32x32 input, 16-d embedding."""
        base = cls(body=IRSEConfig.tiny(), input_size=32, embedding_dim=16)
        return dataclasses.replace(base, **overrides)


@dataclass(frozen=True)
class PSPEncoderConfig:
    """pSp ``GradualStyleEncoder``: IR-SE body + feature pyramid + one ``GradualStyleBlock`` per style vector.

    Styles ``[0, coarse_ind)`` read the deepest map (``input/16``), ``[coarse_ind, middle_ind)`` the
    ``input/8`` map
    and ``[middle_ind, n_styles)`` the ``input/4`` map. Official: 14 styles for EG3D at 256x256 input.
    """

    body: IRSEConfig = field(default_factory=IRSEConfig)
    """The residual body (IR-SE-50, 3-channel input)."""
    n_styles: int = 14
    """Number of predicted style vectors (EG3D FFHQ-512: 14)."""
    w_dim: int = 512
    """Width of each style vector (must equal the generator's w_dim)."""
    coarse_ind: int = 3
    """First style read from the middle (input/8) pyramid level."""
    middle_ind: int = 7
    """First style read from the fine (input/4) pyramid level."""
    input_resolution: int = 256
    """Side of the square input image; the style heads are sized for it."""

    def __post_init__(self) -> None:
        limits.config_int(self.n_styles, "PSPEncoderConfig.n_styles", minimum=0, limit=limits.MODEL_DEPTH)
        limits.config_int(self.w_dim, "PSPEncoderConfig.w_dim", minimum=0, limit=limits.MODEL_WIDTH)
        limits.config_int(self.coarse_ind, "PSPEncoderConfig.coarse_ind", minimum=0, limit=limits.MODEL_DEPTH)
        limits.config_int(self.middle_ind, "PSPEncoderConfig.middle_ind", minimum=0, limit=limits.MODEL_DEPTH)
        limits.config_int(self.input_resolution, "PSPEncoderConfig.input_resolution", limit=limits.MODEL_RESOLUTION)
        if self.n_styles <= 0 or self.w_dim <= 0:
            raise ConfigError(
                f"PSPEncoderConfig: n_styles and w_dim must be positive, got {self.n_styles}, {self.w_dim}"
            )
        if not 0 <= self.coarse_ind <= self.middle_ind <= self.n_styles:
            raise ConfigError(
                f"PSPEncoderConfig needs 0 <= coarse_ind <= middle_ind <= n_styles, got {self.coarse_ind}, "
                f"{self.middle_ind}, {self.n_styles}"
            )
        if not _is_power_of_two(self.input_resolution) or self.input_resolution < 32:
            raise ConfigError(
                f"PSPEncoderConfig.input_resolution must be a power of two >= 32, got {self.input_resolution}"
            )

    @property
    def head_spatial(self) -> tuple[int, int, int]:
        """Input side of the coarse / middle / fine style heads: (16, 32, 64) for 256 inputs."""
        r = self.input_resolution
        return (r // 16, r // 8, r // 4)

    @classmethod
    def official(cls, **overrides: Any) -> PSPEncoderConfig:
        """The TriPlaneNet v1 first branch: IR-SE-50, 14 styles of 512, 256x256 input."""
        return dataclasses.replace(cls(), **overrides)

    @classmethod
    def tiny(cls, **overrides: Any) -> PSPEncoderConfig:
        """Tiny body, 14 styles of width 32, 64x64 input."""
        base = cls(body=IRSEConfig.tiny(), w_dim=32, input_resolution=64)
        return dataclasses.replace(base, **overrides)


@dataclass(frozen=True)
class TriPlaneEncoderConfig:
    """TriPlaneNet second branch: an IR-SE U-Net that predicts ``out_channels`` tri-plane offsets at input resolution.

    ``version`` selects what the branch reads (both released checkpoints load by key name):

    * ``1`` — TriPlaneNet v1 (``triplanenet_final.pth``): input ``[ŷ, x − ŷ]`` (6 channels), head ``final_head``
      on the upsampled decoder features only.
    * ``2`` — TriPlaneNet v2, the WACV'24 paper (``triplanenet_v2_final.pth``): input ``[ŷ, x − ŷ, x_m − ŷ_m]``
      (9 channels, ``_m`` = mirror image / render at the mirror camera); the head ``final_head_two`` reads the
      first-branch tri-planes concatenated in front of the upsampled decoder features.

    Both versions output the residual that is added to the first-branch planes (the official v2 module returns the
    sum; the model adds it, see :class:`triplanenet.model.TriPlaneNet`).

    ``upsampling`` is how the decoder doubles resolution: ``'pixelshuffle'`` (sub-pixel layout, channels / 4; v1,
    and v2 trained with ``--use_pixelshuffle``) or ``'nearest'`` (channels kept; v2's default and the paper's).
    """

    body: IRSEConfig = field(default_factory=lambda: IRSEConfig(input_channels=6))
    """Encoder path (IR-SE-50; 6 input channels for v1, 9 for v2)."""
    version: TriPlaneNetVersion = 1
    """1 (TriPlaneNet v1) or 2 (TriPlaneNet v2, the paper)."""
    upsampling: Upsampling = "pixelshuffle"
    """``'pixelshuffle'`` or ``'nearest'`` x2 upsampling in the decoder (``up2..up4`` and the step before the head)."""
    decoder_channels: tuple[int, int, int, int] = (512, 384, 256, 96)
    """Output channels of ``up1..up4``: (512, 384, 256, 96) with PixelShuffle, (512, 256, 128, 64) with nearest."""
    head_channels: int = 96
    """Hidden channels of the head."""
    out_channels: int = 96
    """Offset channels (3 planes x 32 features for EG3D)."""
    plane_channels: int = 96
    """v2 only: channels of the first-branch tri-planes concatenated before the head."""
    double_prelu: bool = True
    """Each decoder block ends with two consecutive PReLUs, as in both released checkpoints."""
    input_resolution: int = 256
    """Side of the square input; the output has the same side."""

    def __post_init__(self) -> None:
        if isinstance(self.version, bool) or self.version not in (1, 2):
            raise ConfigError(f"TriPlaneEncoderConfig.version must be 1 or 2, got {self.version!r}")
        if self.upsampling not in ("pixelshuffle", "nearest"):
            raise ConfigError(
                f"TriPlaneEncoderConfig.upsampling must be 'pixelshuffle' or 'nearest', got {self.upsampling!r}"
            )
        if self.body.input_channels != self.image_channels:
            raise ConfigError(
                f"TriPlaneNet v{self.version}'s second branch reads {self.image_channels} image channels, but the "
                f"body takes {self.body.input_channels}; set body.input_channels = {self.image_channels}"
            )
        if len(self.decoder_channels) != 4:
            raise ConfigError(
                f"TriPlaneEncoderConfig.decoder_channels needs 4 values (up1..up4), got {self.decoder_channels}"
            )
        _check_positive("TriPlaneEncoderConfig.decoder_channels", self.decoder_channels)
        for name in ("head_channels", "out_channels", "plane_channels"):
            limits.config_int(getattr(self, name), f"TriPlaneEncoderConfig.{name}", minimum=0, limit=limits.MODEL_WIDTH)
        limits.config_int(
            self.input_resolution, "TriPlaneEncoderConfig.input_resolution", limit=limits.MODEL_RESOLUTION
        )
        if min(self.head_channels, self.out_channels, self.plane_channels) <= 0:
            raise ConfigError("TriPlaneEncoderConfig: head_channels, out_channels and plane_channels must be positive")
        if self.upsampling == "pixelshuffle":
            bad = [c for c in self.decoder_channels if c % 4 != 0]
            if bad:
                raise ConfigError(
                    "TriPlaneEncoderConfig: PixelShuffle x2 needs decoder_channels divisible by 4, "
                    f"got {bad}; use multiples of 4"
                )
        if not _is_power_of_two(self.input_resolution) or self.input_resolution < 16:
            raise ConfigError(
                f"TriPlaneEncoderConfig.input_resolution must be a power of two >= 16, got {self.input_resolution}"
            )

    def widened(self, factor: float) -> TriPlaneEncoderConfig:
        """The same U-Net with ``factor`` times the channels in the body, the decoder and the head; what it reads
        (image and plane channels) and writes (``out_channels``) stay. ``factor = 1`` returns an equal config.

        Raises:
            ConfigError: ``factor`` is not >= 1, or leaves a width that is not a whole number.
        """
        if isinstance(factor, bool) or not isinstance(factor, int | float) or not 1 <= factor <= 16:
            raise ConfigError(f"the second branch's width factor must be a number in [1, 16], got {factor!r}")
        widths = (*self.body.channels, *self.decoder_channels, self.head_channels)
        scaled = [c * factor for c in widths]
        if any(abs(w - round(w)) > 1e-9 for w in scaled):
            raise ConfigError(
                f"width factor {factor} turns the second branch's widths {widths} into fractions; pick a factor that "
                "gives whole numbers (for the compact model: 1, 1.5, 2, ...)"
            )
        new = [round(w) for w in scaled]
        body = dataclasses.replace(self.body, channels=tuple(new[:4]))
        return dataclasses.replace(self, body=body, decoder_channels=tuple(new[4:8]), head_channels=new[8])

    @property
    def image_channels(self) -> int:
        """Channels of the image tensor the branch reads: 6 (v1) or 9 (v2, with the mirror residual)."""
        return 6 if self.version == 1 else 9

    @property
    def reads_planes(self) -> bool:
        """Whether the head also reads the first-branch tri-planes (v2)."""
        return self.version == 2

    @property
    def head_name(self) -> str:
        """State-dict name of the head: ``final_head`` (v1) or ``final_head_two`` (v2)."""
        return "final_head" if self.version == 1 else "final_head_two"

    @property
    def up_skip_channels(self) -> tuple[int, int, int, int]:
        """Channels of the skip that ``up1..up4`` read first: the body's stages 4, 3, 2, 1."""
        return (self.body.channels[3], self.body.channels[2], self.body.channels[1], self.body.channels[0])

    @property
    def up_upsampled_channels(self) -> tuple[int, int, int, int]:
        """Channels of the upsampled deeper map that ``up1..up4`` concatenate after the skip (up1 upsamples by 1,
        no channel change; PixelShuffle x2 divides by 4)."""
        deeper = (self.body.channels[3], *self.decoder_channels[:3])
        div = 4 if self.upsampling == "pixelshuffle" else 1
        return (deeper[0], deeper[1] // div, deeper[2] // div, deeper[3] // div)

    @property
    def up_in_channels(self) -> tuple[int, int, int, int]:
        """Input channels of ``up1..up4`` = skip + upsampled channels; (1024, 384, 224, 128) with PixelShuffle."""
        skips, ups = self.up_skip_channels, self.up_upsampled_channels
        return (skips[0] + ups[0], skips[1] + ups[1], skips[2] + ups[2], skips[3] + ups[3])

    @property
    def head_in_channels(self) -> int:
        """Input channels of the head: the upsampled ``up4`` features (96 / 4 = 24 with PixelShuffle, 64 nearest),
        plus ``plane_channels`` for v2 (official v2: 120 or 160)."""
        features = self.decoder_channels[3] // 4 if self.upsampling == "pixelshuffle" else self.decoder_channels[3]
        return features + (self.plane_channels if self.reads_planes else 0)

    @classmethod
    def official(cls, **overrides: Any) -> TriPlaneEncoderConfig:
        """The released TriPlaneNet v1 second branch (loads ``triplanenet_encoder.*`` of the v1 checkpoint)."""
        return dataclasses.replace(cls(), **overrides)

    @classmethod
    def official_v2(cls, upsampling: Upsampling = "nearest", **overrides: Any) -> TriPlaneEncoderConfig:
        """The released TriPlaneNet v2 second branch: nearest-neighbour decoder (512, 256, 128, 64), or with
        ``upsampling='pixelshuffle'`` (official ``--use_pixelshuffle``) v1's decoder widths (512, 384, 256, 96)."""
        decoder = (512, 384, 256, 96) if upsampling == "pixelshuffle" else (512, 256, 128, 64)
        base = cls(body=IRSEConfig(input_channels=9), version=2, upsampling=upsampling, decoder_channels=decoder)
        return dataclasses.replace(base, **overrides)

    @classmethod
    def _small(
        cls,
        version: TriPlaneNetVersion,
        upsampling: Upsampling | None,
        body: IRSEConfig,
        decoder_channels: tuple[int, int, int, int],
        head_channels: int,
        overrides: dict[str, Any],
    ) -> TriPlaneEncoderConfig:
        """A U-Net on 64x64 inputs reading the version's image channels; upsampling defaults to the version's
        official default (v1 PixelShuffle, v2 nearest)."""
        mode: Upsampling = upsampling or ("pixelshuffle" if version == 1 else "nearest")
        base = cls(
            body=dataclasses.replace(body, input_channels=6 if version == 1 else 9),
            version=version,
            upsampling=mode,
            decoder_channels=decoder_channels,
            head_channels=head_channels,
            input_resolution=64,
        )
        return dataclasses.replace(base, **overrides)

    @classmethod
    def tiny(
        cls, version: TriPlaneNetVersion = 1, upsampling: Upsampling | None = None, **overrides: Any
    ) -> TriPlaneEncoderConfig:
        """Tiny U-Net on 64x64 inputs with 96 output channels (EG3D plane layout), for tests."""
        return cls._small(version, upsampling, IRSEConfig.tiny(), (32, 24, 16, 8), 32, overrides)

    @classmethod
    def compact(
        cls, version: TriPlaneNetVersion = 2, upsampling: Upsampling | None = None, **overrides: Any
    ) -> TriPlaneEncoderConfig:
        """The bundled default model's second branch: a 7-unit IR-SE U-Net of 32..96 channels on 64x64 inputs
        (about 1.1 M parameters, ten times the tiny one), wide enough to carry the detail the first branch misses."""
        body = IRSEConfig(units=(1, 2, 2, 2), channels=(32, 48, 64, 96), se_reduction=4)
        return cls._small(version, upsampling, body, (96, 64, 48, 32), 64, overrides)
