"""Model configs read from files are checked before anything is allocated (issue 21).

Absurd sizes (``z_dim=1e9``, ``channel_base=2**40``), resolutions that are not powers of two, negative values,
non-integers and bools are one-line ``ConfigError`` / ``CheckpointError`` naming the field, from dicts, EG3D
``init_kwargs``, a crafted ``.pth`` and crafted ``.safetensors`` headers. The bounds live in
:mod:`triplanenet.limits` and can be raised with environment variables.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from triplanenet.eg3d.config import GeneratorConfig
from triplanenet.eg3d.generator import TriPlaneGenerator
from triplanenet.errors import CheckpointError, ConfigError
from triplanenet.io.checkpoints import SAFETENSORS_FORMAT, SAFETENSORS_FORMAT_VERSION, load_generator
from triplanenet.io.model_checkpoints import MODEL_FORMAT, load_triplanenet
from triplanenet.model import TriPlaneNet, TriPlaneNetConfig

BAD_GENERATOR_FIELDS: list[tuple[str, Any]] = [
    ("z_dim", 1e9),
    ("z_dim", 10**9),
    ("w_dim", 10**400),
    ("channel_base", 2**40),
    ("img_resolution", 100),
    ("backbone_resolution", -64),
    ("triplane_channels", 0),
    ("z_dim", True),
    ("w_dim", "512"),
    ("mapping_layers", 10**6),
    ("decoder_hidden_dim", 64.5),
    ("neural_rendering_resolution", 2**20),
]


def _one_line(exc: BaseException, *needles: str) -> str:
    text = str(exc)
    assert "\n" not in text and len(text) < 400, text
    for needle in needles:
        assert needle in text, text
    return text


@pytest.fixture
def no_allocation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building a generator or a model fails the test: the checks must come first."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a module was built before the config was checked")

    monkeypatch.setattr(TriPlaneGenerator, "__init__", refuse)
    monkeypatch.setattr(TriPlaneNet, "__init__", refuse)


@pytest.mark.parametrize(("field", "value"), BAD_GENERATOR_FIELDS)
def test_generator_dict_with_an_absurd_size_names_the_field(field: str, value: Any) -> None:
    data = GeneratorConfig.tiny().to_dict()
    data[field] = value
    with pytest.raises(ConfigError) as info:
        GeneratorConfig.from_dict(data)
    _one_line(info.value, field)


OFFICIAL_KEYS = {*GeneratorConfig.ffhq512().to_official_kwargs(), "mapping_layers"}


@pytest.mark.parametrize(("field", "value"), [f for f in BAD_GENERATOR_FIELDS if f[0] in OFFICIAL_KEYS])
def test_official_init_kwargs_with_an_absurd_size_name_the_field(field: str, value: Any) -> None:
    kwargs = GeneratorConfig.ffhq512().to_official_kwargs()
    if field == "mapping_layers":
        kwargs["mapping_kwargs"] = {"num_layers": value}
    else:
        kwargs[field] = value
    with pytest.raises(ConfigError) as info:
        GeneratorConfig.from_official_kwargs(kwargs)
    _one_line(info.value, field)


def test_rendering_values_and_non_dicts_are_checked() -> None:
    for rendering, field in [
        ({"depth_resolution": 10**7}, "depth_resolution"),
        ({"ray_start": float("nan")}, "ray_start"),
        ({"avg_camera_pivot": [0, 0]}, "avg_camera_pivot"),
    ]:
        data = GeneratorConfig.tiny().to_dict()
        data["rendering"].update(rendering)
        with pytest.raises(ConfigError) as info:
            GeneratorConfig.from_dict(data)
        _one_line(info.value, field)
    for junk in ("abc", 5, None, []):
        with pytest.raises(ConfigError):
            GeneratorConfig.from_dict(junk)  # type: ignore[arg-type]
    for junk in ("abc", 5):
        with pytest.raises(ConfigError):
            GeneratorConfig.from_official_kwargs({"mapping_kwargs": junk})
        with pytest.raises(ConfigError):
            GeneratorConfig.from_official_kwargs({"rendering_kwargs": junk})


def test_the_parameter_estimate_refuses_a_config_of_valid_but_huge_fields() -> None:
    data = GeneratorConfig.tiny().to_dict()
    data.update(w_dim=8192, mapping_layers=200)  # 13 G parameters
    with pytest.raises(ConfigError) as info:
        GeneratorConfig.from_dict(data)
    _one_line(info.value, "parameter", "TRIPLANENET_MAX_MODEL_PARAMETERS")
    official = GeneratorConfig.ffhq512().parameter_estimate()
    assert 25e6 < official < 40e6  # EG3D's generator has about 31 M


def test_limits_can_be_raised_with_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    data = GeneratorConfig.tiny().to_dict()
    data["z_dim"] = 10_000
    with pytest.raises(ConfigError) as info:
        GeneratorConfig.from_dict(data)
    _one_line(info.value, "z_dim", "TRIPLANENET_MAX_MODEL_WIDTH")
    monkeypatch.setenv("TRIPLANENET_MAX_MODEL_WIDTH", "20000")
    assert GeneratorConfig.from_dict(data).z_dim == 10_000


@pytest.mark.parametrize(
    ("part", "field", "value"),
    [
        ("psp", "w_dim", 10**6),
        ("psp", "n_styles", -1),
        ("psp", "input_resolution", 1e9),
        ("triplane", "decoder_channels", [2**40, 4, 4, 4]),
        ("triplane", "head_channels", True),
        ("generator", "z_dim", 1e9),
    ],
)
def test_model_dict_with_an_absurd_size_names_the_field(part: str, field: str, value: Any) -> None:
    data = TriPlaneNetConfig.tiny().to_dict()
    data[part][field] = value
    with pytest.raises(ConfigError) as info:
        TriPlaneNetConfig.from_dict(data)
    _one_line(info.value, field)


def test_model_dict_body_sizes_are_checked() -> None:
    data = TriPlaneNetConfig.tiny().to_dict()
    data["psp"]["body"]["channels"] = [8, 16, 24, 10**7]
    with pytest.raises(ConfigError) as info:
        TriPlaneNetConfig.from_dict(data)
    _one_line(info.value, "channels")
    for junk in ("abc", 3, {"psp": "x", "generator": [], "triplane": 1}):
        with pytest.raises(ConfigError):
            TriPlaneNetConfig.from_dict(junk)  # type: ignore[arg-type]


def test_crafted_generator_safetensors_is_refused_before_allocating(tmp_path: Path, no_allocation: None) -> None:
    data = GeneratorConfig.tiny().to_dict()
    data["channel_base"] = 2**40
    file = tmp_path / "g.safetensors"
    save_file(
        {"x": torch.zeros(1)},
        str(file),
        metadata={
            "format": SAFETENSORS_FORMAT,
            "format_version": str(SAFETENSORS_FORMAT_VERSION),
            "config": json.dumps(data),
        },
    )
    with pytest.raises((ConfigError, CheckpointError)) as info:
        load_generator(file)
    _one_line(info.value, "channel_base", str(file))


def test_crafted_generator_pth_is_refused_before_allocating(tmp_path: Path, no_allocation: None) -> None:
    kwargs = GeneratorConfig.ffhq512().to_official_kwargs()
    kwargs["z_dim"] = 1e9
    file = tmp_path / "ffhq512-128.pth"
    torch.save({"G_ema": {"x": torch.zeros(1)}, "init_kwargs": kwargs}, file)
    with pytest.raises((ConfigError, CheckpointError)) as info:
        load_generator(file)
    _one_line(info.value, "z_dim")


def test_crafted_model_safetensors_is_refused_before_allocating(tmp_path: Path, no_allocation: None) -> None:
    data = TriPlaneNetConfig.tiny().to_dict()
    data["generator"]["img_resolution"] = 100
    file = tmp_path / "m.safetensors"
    save_file({"latent_avg": torch.zeros(64)}, str(file), metadata={"format": MODEL_FORMAT, "config": json.dumps(data)})
    with pytest.raises((ConfigError, CheckpointError)) as info:
        load_triplanenet(file)
    _one_line(info.value, "img_resolution", str(file))


@pytest.mark.parametrize(
    "config_text",
    ["[" * 100_000 + "]" * 100_000, '{"z_dim": ' + "9" * 5000 + "}", "not json", '"a string"'],
    ids=["deep", "digits", "garbage", "string"],
)
def test_unparsable_config_headers_are_one_line_errors(tmp_path: Path, no_allocation: None, config_text: str) -> None:
    generator_file = tmp_path / "g.safetensors"
    metadata = {"format": SAFETENSORS_FORMAT, "format_version": str(SAFETENSORS_FORMAT_VERSION), "config": config_text}
    save_file({"x": torch.zeros(1)}, str(generator_file), metadata=metadata)
    with pytest.raises((ConfigError, CheckpointError)) as info:
        load_generator(generator_file)
    _one_line(info.value, str(generator_file))
    model_file = tmp_path / "m.safetensors"
    save_file(
        {"latent_avg": torch.zeros(64)}, str(model_file), metadata={"format": MODEL_FORMAT, "config": config_text}
    )
    with pytest.raises(CheckpointError) as info:
        load_triplanenet(model_file)
    _one_line(info.value, str(model_file))
