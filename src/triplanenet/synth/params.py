"""Identity parameters of the procedural head family.

An identity is a vector of :data:`PARAM_DIM` floats with named fields (see :data:`FIELDS`). Shape fields are
dimensionless factors or offsets around a canonical head (1.0 or 0.0 = average); colours are sRGB triples in
[0, 1]. :class:`HeadParams` holds a batch of identities as a (B, PARAM_DIM) tensor and gives named access to
each field (``params.nose_width`` is (B,), ``params.skin_color`` is (B, 3)).

The canonical head is left/right symmetric except for two fields: ``parting`` (signed position and strength
of the side parting; 0 = hair combed straight back) and ``asymmetry`` (weight of the non-mirrored part of the
skin and hair texture; 0 = texture mirrored about x = 0). :meth:`HeadParams.symmetric` zeroes both, giving a
head that is exactly mirror symmetric about the world plane x = 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from triplanenet.errors import ConfigError

__all__ = ["FIELDS", "PARAM_DIM", "Field", "HeadParams"]


@dataclass(frozen=True)
class Field:
    """One named slice of the identity vector.

    Attributes:
        name: attribute name on :class:`HeadParams`.
        size: 1 (scalar, exposed as (B,)) or 3 (colour, exposed as (B, 3)).
        low, high: range used by :meth:`HeadParams.sample` (uniform unless the field has a palette).
        default: value of the average head.
        doc: what the field controls.
    """

    name: str
    size: int
    low: float
    high: float
    default: float | tuple[float, float, float]
    doc: str


FIELDS: tuple[Field, ...] = (
    # Skull and face outline.
    Field("scale", 1, 0.95, 1.05, 1.0, "overall head size factor"),
    Field("head_width", 1, 0.92, 1.08, 1.0, "cranium width factor"),
    Field("head_height", 1, 0.93, 1.07, 1.0, "cranium height factor"),
    Field("head_depth", 1, 0.93, 1.07, 1.0, "cranium front-to-back length factor"),
    Field("face_width", 1, 0.9, 1.1, 1.0, "cheek/mid-face width factor"),
    Field("jaw_width", 1, 0.85, 1.15, 1.0, "jaw width factor"),
    Field("chin_length", 1, 0.88, 1.12, 1.0, "lower-face height factor (chin drop)"),
    Field("chin_protrusion", 1, -1.0, 1.0, 0.0, "chin forward offset (-1 receding .. 1 prominent)"),
    Field("cheekbones", 1, 0.0, 1.0, 0.5, "cheekbone prominence"),
    Field("brow_ridge", 1, 0.0, 1.0, 0.5, "brow ridge prominence"),
    # Eyes.
    Field("eye_spacing", 1, 0.93, 1.07, 1.0, "distance between the eyes, factor"),
    Field("eye_size", 1, 0.88, 1.12, 1.0, "eyeball radius factor"),
    Field("eye_height", 1, -1.0, 1.0, 0.0, "vertical eye offset (-1 lower .. 1 higher)"),
    Field("eye_openness", 1, 0.0, 1.0, 0.5, "how far the upper lids are open"),
    # Nose.
    Field("nose_length", 1, 0.85, 1.15, 1.0, "vertical nose length factor"),
    Field("nose_protrusion", 1, 0.8, 1.2, 1.0, "how far the nose tip sticks out, factor"),
    Field("nose_width", 1, 0.8, 1.25, 1.0, "nostril wing width factor"),
    Field("nose_bridge", 1, 0.0, 1.0, 0.5, "nose bridge height"),
    Field("nose_tip_size", 1, 0.8, 1.2, 1.0, "nose tip radius factor"),
    # Mouth.
    Field("mouth_width", 1, 0.85, 1.15, 1.0, "mouth width factor"),
    Field("lip_fullness", 1, 0.7, 1.3, 1.0, "lip thickness factor"),
    Field("mouth_height", 1, -1.0, 1.0, 0.0, "vertical mouth offset (-1 lower .. 1 higher)"),
    # Ears and neck.
    Field("ear_size", 1, 0.85, 1.15, 1.0, "ear size factor"),
    Field("ear_protrusion", 1, 0.0, 1.0, 0.4, "how far the ears stick out"),
    Field("neck_width", 1, 0.88, 1.12, 1.0, "neck radius factor"),
    # Hair.
    Field("hair_volume", 1, 0.0, 1.0, 0.5, "hair thickness over the skull"),
    Field("hair_length", 1, 0.0, 1.0, 0.3, "how far the hair reaches down the back"),
    Field("hairline", 1, -1.0, 1.0, 0.0, "forehead hairline height (-1 low .. 1 high/receding)"),
    Field("parting", 1, -1.0, 1.0, 0.0, "signed side-parting position and strength; 0 = combed back (symmetric)"),
    # Colours (sRGB in [0, 1]).
    Field("skin_color", 3, 0.0, 1.0, (0.80, 0.62, 0.52), "skin albedo, sRGB"),
    Field("hair_color", 3, 0.0, 1.0, (0.25, 0.16, 0.10), "hair albedo, sRGB"),
    Field("eye_color", 3, 0.0, 1.0, (0.35, 0.22, 0.12), "iris albedo, sRGB"),
    Field("lip_redness", 1, 0.0, 1.0, 0.5, "how much redder the lips are than the skin"),
    Field("blush", 1, 0.0, 1.0, 0.3, "cheek redness"),
    Field("eyebrow_thickness", 1, 0.6, 1.4, 1.0, "eyebrow width factor"),
    Field("eyebrow_darkness", 1, 0.3, 1.0, 0.7, "eyebrow opacity"),
    # High-frequency texture.
    Field("skin_texture", 1, 0.2, 1.0, 0.6, "pore/mottling contrast"),
    Field("freckles", 1, 0.0, 1.0, 0.2, "freckle density"),
    Field("hair_texture", 1, 0.4, 1.0, 0.7, "hair strand contrast"),
    Field("asymmetry", 1, 0.0, 1.0, 1.0, "weight of the non-mirrored texture component; 0 = mirrored texture"),
    Field("texture_seed", 1, 0.0, 65535.0, 0.0, "integer seed of the texture noise (stored as a float)"),
)

_OFFSETS: dict[str, tuple[int, int]] = {}
_pos = 0
for _f in FIELDS:
    _OFFSETS[_f.name] = (_pos, _f.size)
    _pos += _f.size
PARAM_DIM: int = _pos
"""Length of one identity vector."""
del _pos, _f

# Palettes (sRGB) the sampler draws colours from; a small jitter is added to each draw.
_SKIN_LIGHT = (0.93, 0.78, 0.69)
_SKIN_DARK = (0.36, 0.23, 0.16)
_HAIR_PALETTE = (
    (0.06, 0.05, 0.05),  # black
    (0.17, 0.11, 0.07),  # dark brown
    (0.33, 0.21, 0.12),  # brown
    (0.62, 0.48, 0.30),  # dark blond
    (0.82, 0.70, 0.47),  # blond
    (0.48, 0.21, 0.09),  # red
    (0.62, 0.60, 0.58),  # grey
)
_HAIR_WEIGHTS = (0.25, 0.25, 0.2, 0.1, 0.07, 0.06, 0.07)
_EYE_PALETTE = (
    (0.22, 0.12, 0.06),  # dark brown
    (0.40, 0.25, 0.12),  # brown
    (0.45, 0.38, 0.18),  # hazel
    (0.27, 0.42, 0.25),  # green
    (0.30, 0.45, 0.62),  # blue
    (0.45, 0.50, 0.55),  # grey
)
_EYE_WEIGHTS = (0.35, 0.2, 0.12, 0.1, 0.15, 0.08)


class HeadParams:
    """A batch of head identities: a (B, :data:`PARAM_DIM`) float32 tensor with named fields.

    Build with :meth:`sample` (random identities), :meth:`from_seed`, :meth:`default` (the average head) or
    from an existing vector ``HeadParams(tensor)``. Fields are read as attributes: scalar fields give (B,)
    views, colours (B, 3) views. :meth:`replace` returns a copy with some fields changed.
    """

    def __init__(self, vector: torch.Tensor) -> None:
        vector = torch.as_tensor(vector, dtype=torch.float32)
        if vector.dim() == 1:
            vector = vector.unsqueeze(0)
        if vector.dim() != 2 or vector.shape[-1] != PARAM_DIM:
            raise ConfigError(
                f"head parameters must have shape (B, {PARAM_DIM}), got {tuple(vector.shape)}; "
                "build them with HeadParams.sample or HeadParams.default"
            )
        if not bool(torch.isfinite(vector).all()):
            raise ConfigError("head parameters contain NaN/inf; sample them again or fix the vector")
        self.vector = vector

    # -- construction ----------------------------------------------------------------------------------

    @classmethod
    def default(cls, n: int = 1, device: torch.device | str | None = None) -> HeadParams:
        """``n`` copies of the average head (symmetric hair, mirrored-texture weight 1)."""
        _check_count(n)
        row = torch.empty(PARAM_DIM)
        for f in FIELDS:
            start, size = _OFFSETS[f.name]
            row[start : start + size] = torch.as_tensor(f.default, dtype=torch.float32)
        return cls(row.to(device).expand(n, PARAM_DIM).clone())

    @classmethod
    def sample(cls, generator: torch.Generator | None, n: int = 1) -> HeadParams:
        """``n`` random identities drawn with ``generator`` (deterministic for a seeded generator).

        Scalar fields are uniform in their range; skin tones lie on a light-to-dark line with a small hue
        jitter; hair and eye colours come from palettes with jitter; the parting is on a random side with
        strength in [0.4, 1]; ``texture_seed`` is a random integer.
        """
        _check_count(n)
        g = generator

        def uniform(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=g)

        out = torch.empty(n, PARAM_DIM)
        for f in FIELDS:
            start, size = _OFFSETS[f.name]
            if size == 1:
                out[:, start] = f.low + (f.high - f.low) * uniform(n)
        # Parting: random side, never (almost) centred.
        side = torch.where(uniform(n) < 0.5, -1.0, 1.0)
        out[:, _OFFSETS["parting"][0]] = side * (0.4 + 0.6 * uniform(n))
        out[:, _OFFSETS["asymmetry"][0]] = 1.0
        out[:, _OFFSETS["texture_seed"][0]] = torch.floor(uniform(n) * 65536.0).clamp_max(65535.0)
        # Colours.
        tone = uniform(n, 1)
        light, dark = torch.tensor(_SKIN_LIGHT), torch.tensor(_SKIN_DARK)
        skin = light + (dark - light) * tone + 0.03 * (2 * uniform(n, 3) - 1)
        out[:, _slice("skin_color")] = skin.clamp(0.0, 1.0)
        out[:, _slice("hair_color")] = _palette_draw(_HAIR_PALETTE, _HAIR_WEIGHTS, n, g, 0.05)
        out[:, _slice("eye_color")] = _palette_draw(_EYE_PALETTE, _EYE_WEIGHTS, n, g, 0.04)
        return cls(out)

    @classmethod
    def from_seed(cls, seed: int, n: int = 1) -> HeadParams:
        """``n`` identities from an integer seed (same seed, same identities, on every machine)."""
        g = torch.Generator().manual_seed(int(seed))
        return cls.sample(g, n)

    # -- access ----------------------------------------------------------------------------------------

    def __getattr__(self, name: str) -> torch.Tensor:
        offsets = _OFFSETS.get(name)
        if offsets is None:
            raise AttributeError(f"HeadParams has no field {name!r}")
        start, size = offsets
        vector = self.__dict__["vector"]
        return vector[:, start] if size == 1 else vector[:, start : start + size]

    def __len__(self) -> int:
        return self.vector.shape[0]

    def __getitem__(self, index: int | slice | torch.Tensor) -> HeadParams:
        """Sub-batch; an integer index keeps a batch of one."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return HeadParams(self.vector[index])

    def __iter__(self) -> Iterator[HeadParams]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"HeadParams(batch={len(self)}, dim={PARAM_DIM})"

    @property
    def device(self) -> torch.device:
        return self.vector.device

    def to(self, device: torch.device | str) -> HeadParams:
        return HeadParams(self.vector.to(device))

    def as_dict(self) -> dict[str, torch.Tensor]:
        """``{field name: (B,) or (B, 3) tensor}`` views."""
        return {f.name: getattr(self, f.name) for f in FIELDS}

    def replace(self, **values: float | torch.Tensor | tuple[float, float, float]) -> HeadParams:
        """Copy with some fields set (a scalar/triple for all rows, or a (B,) / (B, 3) tensor)."""
        out = self.vector.clone()
        for name, value in values.items():
            if name not in _OFFSETS:
                raise ConfigError(f"unknown head parameter {name!r}; valid names: {', '.join(_OFFSETS)}")
            start, size = _OFFSETS[name]
            t = torch.as_tensor(value, dtype=torch.float32, device=out.device)
            target = out[:, start] if size == 1 else out[:, start : start + size]
            try:
                target.copy_(t.expand_as(target))
            except RuntimeError as exc:
                raise ConfigError(
                    f"value for {name!r} has shape {tuple(t.shape)}, expected a scalar, {tuple(target.shape[1:])} "
                    f"or {tuple(target.shape)}"
                ) from exc
        return HeadParams(out)

    def symmetric(self) -> HeadParams:
        """Copy with ``parting = 0`` and ``asymmetry = 0``: exactly mirror symmetric about x = 0."""
        return self.replace(parting=0.0, asymmetry=0.0)


def _slice(name: str) -> slice:
    start, size = _OFFSETS[name]
    return slice(start, start + size)


def _check_count(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"number of identities must be a positive integer, got {n!r}")


def _palette_draw(
    palette: tuple[tuple[float, float, float], ...],
    weights: tuple[float, ...],
    n: int,
    generator: torch.Generator | None,
    jitter: float,
) -> torch.Tensor:
    choice = torch.multinomial(torch.tensor(weights), n, replacement=True, generator=generator)
    colours = torch.tensor(palette)[choice]
    colours = colours * (1.0 + jitter * (2 * torch.rand(n, 3, generator=generator) - 1))
    return colours.clamp(0.0, 1.0)
