"""Training configuration: typed dataclasses, named presets, and loading from TOML/JSON with ``key=value`` overrides.

Presets (the paper and the official code disagree on some values, reference §6.4):

* ``paper`` (default): TriPlaneNet v2 (the WACV'24 model) with the paper's values: λ1 = λ4 = 1 (pixel / symmetry),
  λ2 = λ5 = 1 (LPIPS), λ3 = λ6 = 0.1 (ID), λm = 0.1 (mirror), σ used as in eq. 5 (no +1), batch 3, second branch
  from 20K steps, first branch frozen at 500K, 1.5M steps.
* ``v2``: the released v2 code (``train_options_v2.py`` defaults): pSp L2 1.0 / LPIPS 0.8 / ID 0.1, tri-plane
  smooth-L1 1.0 / LPIPS 0.8 / ID 0.1, mirror terms with the same weights and λm = 0.1, σ + 1 in the mirror loss,
  batch 3 in every phase; ``adversarial = true`` adds its discriminator phase (from 600K steps, λ_adv 0.005, R1 γ 10
  every 16 steps).
* ``official_v1``: the released v1 code: pSp L2 1.0 / LPIPS 0.8 / ID 0.1, tri-plane smooth-L1 1.0 / LPIPS 0.1 /
  ID 0.1, no mirror loss, batch 4, 1M steps.
* ``tiny``: the paper recipe on the tiny test model, 200 steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomllib

from triplanenet.errors import ConfigError

PixelLoss = Literal["l2", "smooth_l1", "l1"]
Confidence = Literal["none", "maps", "confnet", "learned"]


@dataclass(frozen=True)
class BranchLossConfig:
    """Weights of one branch's loss: reconstruction (eq. 2) + ``mirror`` × mirror-view prior (eq. 3)."""

    pixel: PixelLoss = "l2"
    """Pixel distance for the same view (and, inside L_symm, for the mirror view)."""
    pixel_weight: float = 1.0
    """λ1 (first branch) / its smooth-L1 analogue (second branch)."""
    lpips_weight: float = 1.0
    """λ2."""
    id_weight: float = 0.1
    """λ3."""
    mirror: float = 0.1
    """λm: weight of the whole mirror-view term L_m (0 disables mirror rendering for this branch)."""
    symmetry_weight: float = 1.0
    """λ4: confidence-weighted symmetry term (eq. 5)."""
    mirror_lpips_weight: float = 1.0
    """λ5."""
    mirror_id_weight: float = 0.1
    """λ6."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs. Paths are strings so the config serialises as plain JSON."""

    data: str = ""
    """Dataset root in the official layout (``dataset.json`` + images [+ ``conf_map/*.npy``])."""
    out: str = "runs/triplanenet"
    """Run folder: checkpoints, TensorBoard logs, the resolved config."""
    model: Literal["official", "tiny", "compact"] = "official"
    """Encoder sizes: the official model, the tiny test model, or ``compact`` (the bundled default model's preset: tiny
    pSp, wider second branch, :meth:`~triplanenet.model.TriPlaneNetConfig.compact`; the shipped model doubles that
    branch with ``triplane_width = 2``)."""
    generator: str | None = None
    """EG3D generator checkpoint (.pkl / .pth / .safetensors). None: random weights (tests only)."""
    triplanenet_version: Literal[1, 2] = 2
    """1: TriPlaneNet v1 (second branch reads [ŷ, x − ŷ]); 2: v2, the paper (adds the mirror residual and the
    first-branch planes)."""
    upsampling: Literal["pixelshuffle", "nearest"] | None = None
    """Second-branch decoder upsampling; None: the version's official default (v1 PixelShuffle, v2 nearest)."""
    init_checkpoint: str | None = None
    """Start from a TriPlaneNet checkpoint (ours or official) instead of the IR-SE initialisation."""
    triplane_width: float = 1.0
    """Channels of the second branch (body, decoder, head) relative to the ``model`` preset, e.g. 1.5. With an
    ``init_checkpoint`` whose second branch is narrower, that branch is widened without changing its output
    (:func:`~triplanenet.encoders.widen.widen_triplane_encoder`) and training continues from it."""
    irse50: str | None = None
    """ArcFace ``model_ir_se50.pth``: initialises both encoder bodies (as official) and enables the ID loss."""
    identity_network: str | None = None
    """Our identity network (.safetensors) when no ArcFace weights are available."""
    batch_size: int = 3
    """Batch size of the first phase (first branch only)."""
    batch_size_after_triplanenet: int | None = None
    """Batch size from ``add_triplanenet`` on (None: ``batch_size``)."""
    batch_size_after_discriminator: int | None = None
    """Batch size from ``add_discriminator`` on, when ``adversarial`` (None: the previous phase's)."""
    batch_size_after_pspstop: int | None = None
    """Batch size after ``stop_psp`` (None: the previous phase's)."""
    val_fraction: float = 0.05
    """Share of identities held out for validation (deterministic by name)."""
    workers: int = 0
    seed: int = 0
    lr_psp: float = 1e-4
    lr_triplane: float = 1e-4
    optimizer: Literal["ranger", "adam"] = "ranger"
    add_triplanenet: int = 20_000
    """Step at which the second branch starts training."""
    stop_psp: int = 500_000
    """Step at which the first branch is frozen."""
    max_steps: int = 1_500_000
    lr_decay_start: int | None = None
    """Step from which both learning rates fall along a half cosine to ``lr_decay_final`` times their value at
    ``max_steps``; None keeps them constant (official)."""
    lr_decay_final: float = 0.1
    """Learning-rate factor reached at ``max_steps`` when ``lr_decay_start`` is set, in (0, 1]."""
    psp_losses: BranchLossConfig = field(default_factory=BranchLossConfig)
    triplane_losses: BranchLossConfig = field(default_factory=lambda: BranchLossConfig(pixel="smooth_l1"))
    mirror_eps: float = 0.0
    """Added to σ in the mirror pixel term: 0 = eq. 5 of the paper, 1 = the official v2 code (``EPS = 1``)."""
    normalize_mirror: bool = False
    """Official ``--normalize_mirror``: divide each image's mirror pixel term by ``mean(1 / (σ + eps))``."""
    adversarial: bool = False
    """v2's optional adversarial loss (official ``--use_discriminator``) on the second branch's renders."""
    discriminator: str | None = None
    """Initial discriminator weights (official ``discriminator.pth``, a plain state dict); None: random init."""
    add_discriminator: int = 600_000
    """Step at which the adversarial phase starts."""
    adv_weight: float = 0.005
    """λ_adv: weight of the non-saturating generator loss (official ``adv_lambda``)."""
    lr_discriminator: float = 1e-4
    """Adam learning rate of the discriminator."""
    r1_gamma: float = 10.0
    """R1 weight γ (the penalty is scaled by γ / 2 · r1_every)."""
    r1_every: int = 16
    """Apply R1 every this many steps (lazy regularisation)."""
    confidence: Confidence = "none"
    """σ for the symmetry loss: none (σ = 1), dataset maps, a fixed σ-net (``confnet``), or ``learned`` (eq. 4)."""
    confnet: str | None = None
    """unsup3d checkpoint (``netC``) or our σ-net file, for ``confidence = confnet``."""
    lr_confnet: float = 1e-4
    confnet_nf: int = 64
    """Width of the σ-net trained with ``confidence = learned``, a multiple of 16 (unsup3d: 64; bundled model: 16)."""
    confnet_zdim: int = 128
    """Bottleneck channels of that σ-net (unsup3d: 128)."""
    synthetic_samples: int = 0
    """EG3D samples (ψ = 1, cameras from the training poses and their mirrors) generated before training."""
    depth_samples: int | None = None
    """Override coarse and fine samples per ray while training (official: 48 + 48)."""
    amp: bool = True
    """bf16 autocast on CUDA (ignored on CPU)."""
    log_every: int = 50
    image_every: int = 500
    val_every: int = 2_500
    save_every: int = 5_000
    val_batches: int | None = None
    """Limit validation to this many batches (None: the whole split)."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError("batch_size must be >= 1")
        if not 0 <= self.add_triplanenet <= self.max_steps or self.stop_psp < 0:
            raise ConfigError("need 0 <= add_triplanenet <= max_steps and stop_psp >= 0")
        if isinstance(self.triplane_width, bool) or not 1.0 <= self.triplane_width <= 16.0:
            raise ConfigError(f"triplane_width must be a number in [1, 16], got {self.triplane_width!r}")
        if self.lr_decay_start is not None and not 0 <= self.lr_decay_start < self.max_steps:
            raise ConfigError(
                f"lr_decay_start must be in [0, max_steps = {self.max_steps}) or null, got {self.lr_decay_start}"
            )
        if not 0.0 < self.lr_decay_final <= 1.0:
            raise ConfigError(f"lr_decay_final must be in (0, 1], got {self.lr_decay_final}")
        if self.triplanenet_version not in (1, 2):
            raise ConfigError(f"triplanenet_version must be 1 or 2, got {self.triplanenet_version!r}")
        if self.upsampling not in (None, "pixelshuffle", "nearest"):
            raise ConfigError(f"upsampling must be pixelshuffle, nearest or null, got {self.upsampling!r}")
        for name in ("batch_size_after_triplanenet", "batch_size_after_discriminator", "batch_size_after_pspstop"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1 (or null for the previous phase's batch size)")
        if self.mirror_eps < 0:
            raise ConfigError("mirror_eps must be >= 0")
        if self.adversarial:
            if self.triplanenet_version != 2:
                raise ConfigError("the adversarial loss is part of the v2 recipe; set triplanenet_version = 2")
            if self.add_discriminator < self.add_triplanenet:
                raise ConfigError("add_discriminator must be >= add_triplanenet (the second branch must be training)")
            if self.r1_every < 1 or self.r1_gamma < 0 or self.adv_weight < 0:
                raise ConfigError("need r1_every >= 1, r1_gamma >= 0 and adv_weight >= 0")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError("val_fraction must be in [0, 1)")
        from triplanenet.losses.confnet import ConfNetConfig

        try:  # the σ-net's own size check, named by these fields
            ConfNetConfig(nf=self.confnet_nf, zdim=self.confnet_zdim)
        except ConfigError as error:
            raise ConfigError(f"confnet_nf / confnet_zdim: {error}") from None
        if self.confidence == "confnet" and not self.confnet:
            raise ConfigError("confidence = 'confnet' needs confnet = <path to a σ-net checkpoint>")
        for name in ("log_every", "image_every", "val_every", "save_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")
        if self.depth_samples is not None:
            from triplanenet.limits import DEPTH_SAMPLES

            if self.depth_samples < 4:
                raise ConfigError("depth_samples must be >= 4 (or null for the model's own)")
            DEPTH_SAMPLES.check(self.depth_samples, "depth_samples")

    def lr_factor(self, step: int) -> float:
        """Learning-rate multiplier at ``step``: 1 before ``lr_decay_start``, then a half cosine from 1 to
        ``lr_decay_final`` at ``max_steps``."""
        start = self.lr_decay_start
        if start is None or step <= start:
            return 1.0
        progress = min(1.0, (step - start) / (self.max_steps - start))
        return self.lr_decay_final + (1.0 - self.lr_decay_final) * 0.5 * (1.0 + math.cos(math.pi * progress))

    @property
    def uses_mirror(self) -> bool:
        """Whether a mirror-view loss term is on (v2's second branch reads the mirror view regardless)."""
        return self.psp_losses.mirror > 0 or self.triplane_losses.mirror > 0

    def batch_changes(self) -> list[tuple[int, int]]:
        """(first step, batch size) of the phases after the first one, in the official order: the second branch,
        the discriminator (with ``adversarial``), the frozen first branch. ``None`` sizes keep the size of the phase
        before (by step)."""
        changes = [(self.add_triplanenet, self.batch_size_after_triplanenet)]
        if self.adversarial:
            changes.append((self.add_discriminator, self.batch_size_after_discriminator))
        changes.append((self.stop_psp, self.batch_size_after_pspstop))
        resolved: list[tuple[int, int]] = []
        size = self.batch_size
        for step, value in sorted(changes, key=lambda change: change[0]):
            size = size if value is None else value
            resolved.append((step, size))
        return resolved

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build a config from plain data (a file, overrides), checking every value against its field's type.

        Raises:
            ConfigError: an unknown option, or a value of the wrong type (``lr_psp = "abc"``, ``amp = "yes"``,
                ``max_steps = 1.5``, ``lr_psp = NaN``, ``pixel = "l3"``), one line naming the option.
        """
        values = dict(data)
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        for key in ("psp_losses", "triplane_losses"):
            if isinstance(values.get(key), BranchLossConfig):
                values[key] = dataclasses.asdict(values[key])
            if isinstance(values.get(key), dict):
                extra = set(values[key]) - {f.name for f in dataclasses.fields(BranchLossConfig)}
                if extra:
                    raise ConfigError(f"unknown option(s) in {key}: {', '.join(sorted(extra))}")
                values[key] = BranchLossConfig(**_typed_values(BranchLossConfig, values[key], f"{key}."))
        try:
            return cls(**_typed_values(cls, values, ""))
        except TypeError as exc:
            raise ConfigError(f"invalid training config: {exc}") from None


class _WrongType(Exception):
    """A value does not fit a type hint; carries the description of what was expected."""


def _typed_values(cls: type, values: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``values`` checked (and ints widened to float, integral floats narrowed to int) against ``cls``'s fields."""
    hints = typing.get_type_hints(cls)
    checked = {}
    for name, value in values.items():
        try:
            checked[name] = _fit(value, hints[name])
        except _WrongType as exc:
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise ConfigError(f"training option {prefix}{name} must be {exc}, got {shown}") from None
    return checked


def _fit(value: Any, hint: Any) -> Any:
    """``value`` as type ``hint`` (bool, int, float, str, Literal[...], BranchLossConfig, or a union of them)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        options = [arg for arg in args if arg is not type(None)]
        for option in options:
            with contextlib.suppress(_WrongType):
                return _fit(value, option)
        described = " or ".join(_describe(option) for option in options)
        raise _WrongType(described + (" or null" if type(None) in args else ""))
    if origin is Literal:
        for allowed in args:  # type-exact, so that true does not pass for 1
            if type(value) is type(allowed) and value == allowed:
                return value
        raise _WrongType(_describe(hint))
    if hint is BranchLossConfig and isinstance(value, BranchLossConfig):
        return value
    if hint is bool and type(value) is bool:
        return value
    if hint is int and type(value) is int:
        return value
    if hint is int and type(value) is float and math.isfinite(value) and value.is_integer():
        return int(value)  # 1e6 in a JSON/TOML file
    if hint is float and type(value) in (int, float) and math.isfinite(value):
        return float(value)
    if hint is str and type(value) is str:
        return value
    raise _WrongType(_describe(hint))


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(json.dumps(arg) for arg in typing.get_args(hint))
    names = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _paper() -> dict[str, Any]:
    return {}


def _official_v2() -> dict[str, Any]:
    mirror_terms = {"mirror": 0.1, "symmetry_weight": 1.0, "mirror_lpips_weight": 0.8, "mirror_id_weight": 0.1}
    return {
        "triplanenet_version": 2,
        "batch_size": 3,
        "add_triplanenet": 20_000,
        "stop_psp": 500_000,
        "max_steps": 1_500_000,
        "psp_losses": {"pixel": "l2", "pixel_weight": 1.0, "lpips_weight": 0.8, "id_weight": 0.1, **mirror_terms},
        "triplane_losses": {
            "pixel": "smooth_l1",
            "pixel_weight": 1.0,
            "lpips_weight": 0.8,
            "id_weight": 0.1,
            **mirror_terms,
        },
        "mirror_eps": 1.0,
        "confidence": "maps",
        "add_discriminator": 600_000,
        "adv_weight": 0.005,
        "lr_discriminator": 1e-4,
        "r1_gamma": 10.0,
        "r1_every": 16,
        "log_every": 50,
        "image_every": 100,
        "val_every": 10_000,
        "save_every": 100_000,
    }


def _official_v1() -> dict[str, Any]:
    return {
        "triplanenet_version": 1,
        "batch_size": 4,
        "max_steps": 1_000_000,
        "psp_losses": {"pixel": "l2", "pixel_weight": 1.0, "lpips_weight": 0.8, "id_weight": 0.1, "mirror": 0.0},
        "triplane_losses": {
            "pixel": "smooth_l1",
            "pixel_weight": 1.0,
            "lpips_weight": 0.1,
            "id_weight": 0.1,
            "mirror": 0.0,
        },
        "val_every": 1000,
    }


def _tiny() -> dict[str, Any]:
    return {
        "model": "tiny",
        "batch_size": 2,
        "add_triplanenet": 20,
        "stop_psp": 150,
        "max_steps": 200,
        "log_every": 10,
        "image_every": 100,
        "val_every": 50,
        "save_every": 100,
        "lr_psp": 1e-3,
        "lr_triplane": 1e-3,
        "val_fraction": 0.25,
    }


PRESETS = {"paper": _paper, "v2": _official_v2, "official_v1": _official_v1, "tiny": _tiny}


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value); the value is read as JSON when it parses, else kept as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like key=value (e.g. batch_size=4 or psp_losses.mirror=0)")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip().split("."), value


def load_train_config(source: str, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """A preset name (``paper``, ``v2``, ``official_v1``, ``tiny``) or a ``.toml`` / ``.json`` file, then overrides.

    A file may name a base preset with ``preset = "..."``.
    """
    defaults = TrainConfig().to_dict()  # nested groups start from their own defaults, not from blank dicts
    if source in PRESETS:
        data: dict[str, Any] = _merge(defaults, PRESETS[source]())
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"{source}: not a preset ({', '.join(PRESETS)}) and no such config file")
        try:
            text = path.read_text()
            loaded = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot parse the config ({exc})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the config must be a table/object of options")
        base = loaded.pop("preset", "paper")
        if base not in PRESETS:
            raise ConfigError(f"{path}: unknown preset {base!r}; choose one of {', '.join(PRESETS)}")
        data = _merge(_merge(defaults, PRESETS[base]()), loaded)
    for override in overrides:
        keys, value = parse_override(override)
        if not isinstance(value, str) and value is not None and _takes_text(keys):
            value = override.partition("=")[2]  # out=2024 is the folder "2024", not the number
        target = data
        for key in keys[:-1]:
            target = target.setdefault(key, {})
            if not isinstance(target, dict):
                raise ConfigError(f"override {override!r}: {key} is not a group of options")
        target[keys[-1]] = value
    return TrainConfig.from_dict(data)


def _takes_text(keys: list[str]) -> bool:
    """Whether option ``keys`` (``["out"]``, ``["psp_losses", "pixel"]``) is a plain text field (str / str | None)."""
    cls: type = TrainConfig
    for key in keys[:-1]:
        hint = typing.get_type_hints(cls).get(key)
        if not (isinstance(hint, type) and dataclasses.is_dataclass(hint)):
            return False
        cls = hint
    hint = typing.get_type_hints(cls).get(keys[-1])
    return hint is str or (typing.get_origin(hint) in (typing.Union, types.UnionType) and str in typing.get_args(hint))


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
