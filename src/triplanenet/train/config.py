"""Training configuration: typed dataclasses, named presets, and loading from TOML/JSON with ``key=value`` overrides.

Two loss-weight presets are provided because the paper and the official code disagree (reference §6.4):

* ``paper``: λ1 = λ4 = 1 (pixel / symmetry), λ2 = λ5 = 1 (LPIPS), λ3 = λ6 = 0.1 (ID), λm = 0.1 (mirror), batch 3,
  second branch from 20K steps, first branch frozen at 500K, 1.5M steps.
* ``official_v1``: the released v1 code: pSp L2 1.0 / LPIPS 0.8 / ID 0.1, tri-plane smooth-L1 1.0 / LPIPS 0.1 /
  ID 0.1, no mirror loss, batch 4, 1M steps.
"""

from __future__ import annotations

import dataclasses
import json
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
    model: Literal["official", "tiny"] = "official"
    """Encoder sizes: the official v1 model, or the tiny test model."""
    generator: str | None = None
    """EG3D generator checkpoint (.pkl / .pth / .safetensors). None: random weights (tests only)."""
    triplane_variant: Literal["official_v1", "paper"] = "official_v1"
    """Second-branch architecture."""
    init_checkpoint: str | None = None
    """Start from a TriPlaneNet checkpoint (ours or official) instead of the IR-SE initialisation."""
    irse50: str | None = None
    """ArcFace ``model_ir_se50.pth``: initialises both encoder bodies (as official) and enables the ID loss."""
    identity_network: str | None = None
    """Our identity network (.safetensors) when no ArcFace weights are available."""
    batch_size: int = 3
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
    psp_losses: BranchLossConfig = field(default_factory=BranchLossConfig)
    triplane_losses: BranchLossConfig = field(default_factory=lambda: BranchLossConfig(pixel="smooth_l1"))
    confidence: Confidence = "none"
    """σ for the symmetry loss: none (σ = 1), dataset maps, a fixed σ-net (``confnet``), or ``learned`` (eq. 4)."""
    confnet: str | None = None
    """unsup3d checkpoint (``netC``) or our σ-net file, for ``confidence = confnet``."""
    lr_confnet: float = 1e-4
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
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError("val_fraction must be in [0, 1)")
        if self.confidence == "confnet" and not self.confnet:
            raise ConfigError("confidence = 'confnet' needs confnet = <path to a σ-net checkpoint>")
        for name in ("log_every", "image_every", "val_every", "save_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")

    @property
    def uses_mirror(self) -> bool:
        return self.psp_losses.mirror > 0 or self.triplane_losses.mirror > 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        values = dict(data)
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        try:
            for key in ("psp_losses", "triplane_losses"):
                if isinstance(values.get(key), dict):
                    extra = set(values[key]) - {f.name for f in dataclasses.fields(BranchLossConfig)}
                    if extra:
                        raise ConfigError(f"unknown option(s) in {key}: {', '.join(sorted(extra))}")
                    values[key] = BranchLossConfig(**values[key])
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"invalid training config: {exc}") from None


def _paper() -> dict[str, Any]:
    return {}


def _official_v1() -> dict[str, Any]:
    return {
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


PRESETS = {"paper": _paper, "official_v1": _official_v1, "tiny": _tiny}


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
    """A preset name (``paper``, ``official_v1``, ``tiny``) or a ``.toml`` / ``.json`` file, then overrides.

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
        target = data
        for key in keys[:-1]:
            target = target.setdefault(key, {})
            if not isinstance(target, dict):
                raise ConfigError(f"override {override!r}: {key} is not a group of options")
        target[keys[-1]] = value
    return TrainConfig.from_dict(data)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
