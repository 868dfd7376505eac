"""Safe checkpoint loading: NVIDIA ``.pkl``, TriPlaneNet ``.pth`` and our ``.safetensors`` format.

The real-format files come from the reference pack (``tiny_official_G.{pkl,pth}``, written by the official code for a
tiny EG3D generator: channel_base 1024, channel_max 64, depth 12+12); they are read from ``../shared`` and never copied
into the repository. The ``.pkl`` embeds NVIDIA's source code: these tests also check that none of it runs.
"""

from __future__ import annotations

import os
import pickle
import re
import sys
import tempfile
import types
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import fixture_path, fixture_weights, load_fixture, read_keys_tsv
from triplanenet.eg3d.config import GeneratorConfig
from triplanenet.errors import CheckpointError, ConfigError
from triplanenet.io import convert_generator, load_generator, read_generator_checkpoint, save_generator
from triplanenet.io.checkpoints import RawGenerator, safe_torch_load
from triplanenet.io.safe_pickle import safe_load_pickle

PKL = "tiny_official_G.pkl"
PTH = "tiny_official_G.pth"
OUTPUTS = "tiny_official_outputs.pt"
SEED_G_EMA = 3
SEED_G = 1003


# ---------------------------------------------------------------------------------------------------------------
# Shared fixtures


@pytest.fixture(scope="module")
def raw_pkl() -> RawGenerator:
    return read_generator_checkpoint(fixture_path(PKL))


@pytest.fixture(scope="module")
def raw_pth() -> RawGenerator:
    return read_generator_checkpoint(fixture_path(PTH))


@pytest.fixture(scope="module")
def pth_dict() -> dict[str, Any]:
    return torch.load(fixture_path(PTH), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def outputs() -> dict[str, Any]:
    return load_fixture(OUTPUTS)


def _one_line_error(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


# ---------------------------------------------------------------------------------------------------------------
# Reading the real-format files


def test_pkl_and_pth_hold_the_same_generator_bit_for_bit(raw_pkl: RawGenerator, raw_pth: RawGenerator) -> None:
    assert raw_pkl.source_format == "nvidia-pkl"
    assert raw_pth.source_format == "triplanenet-pth"
    assert len(raw_pkl.state_dict) == 176
    assert list(raw_pkl.state_dict) == list(raw_pth.state_dict)
    for key, value in raw_pkl.state_dict.items():
        other = raw_pth.state_dict[key]
        assert value.dtype == other.dtype and value.shape == other.shape, key
        assert torch.equal(value, other), key
        assert type(value) is torch.Tensor and not value.requires_grad, key
    # The training loop's extra buffer is dropped, and reported.
    assert raw_pkl.dropped_keys == ("dataset_label_std",)
    assert raw_pth.dropped_keys == ("dataset_label_std",)


def test_key_names_equal_the_official_g_ema_keys(raw_pkl: RawGenerator) -> None:
    official = read_keys_tsv("eg3d_G_ema.tsv")
    assert set(raw_pkl.state_dict) == set(official)
    # Mapping, super-resolution and decoder shapes do not depend on channel_base/max: they equal FFHQ's.
    for key, shape in official.items():
        if not key.startswith("backbone.synthesis."):
            assert tuple(raw_pkl.state_dict[key].shape) == shape, key
    # Backbone widths follow min(channel_base // res, channel_max) = min(1024 // res, 64).
    assert tuple(raw_pkl.state_dict["backbone.synthesis.b4.const"].shape) == (64, 4, 4)
    assert tuple(raw_pkl.state_dict["backbone.synthesis.b256.conv1.weight"].shape) == (4, 4, 3, 3)
    assert tuple(raw_pkl.state_dict["backbone.synthesis.b256.torgb.weight"].shape) == (96, 4, 1, 1)


def test_init_kwargs_map_to_the_expected_config(raw_pkl: RawGenerator, raw_pth: RawGenerator) -> None:
    assert raw_pkl.neural_rendering_resolution == 64
    assert raw_pth.neural_rendering_resolution is None
    # EasyDicts (mapping_kwargs, sr_kwargs) come back as plain dicts.
    assert type(raw_pkl.init_kwargs["mapping_kwargs"]) is dict
    assert type(raw_pkl.init_kwargs["sr_kwargs"]) is dict
    for raw, nrr, sr_module in (
        (raw_pkl, 64, "training.superresolution.SuperresolutionHybrid8XDC"),
        (raw_pth, 128, "models.eg3d.superresolution.SuperresolutionHybrid8XDC"),
    ):
        config = raw.generator_config()
        assert config.channel_base == 1024 and config.channel_max == 64
        assert config.rendering.depth_resolution == 12
        assert config.rendering.depth_resolution_importance == 12
        assert config.neural_rendering_resolution == nrr
        assert config.sr_module == sr_module
        assert (config.z_dim, config.w_dim, config.c_dim, config.img_resolution) == (512, 512, 25, 512)
        assert config.mapping_layers == 2 and config.num_fp16_res == 0 and config.conv_clamp is None
        assert config.sr_num_fp16_res == 4 and config.rendering.c_scale == 1.0
        assert config.rendering.superresolution_noise_mode == "none" and config.rendering.sr_antialias
        assert raw.generator_config(256).neural_rendering_resolution == 256
    # Apart from the super-resolution class path, both files describe the same generator.
    assert raw_pkl.generator_config(128).replace(sr_module="x") == raw_pth.generator_config().replace(sr_module="x")


def test_latent_avg(raw_pkl: RawGenerator, raw_pth: RawGenerator, outputs: dict[str, Any]) -> None:
    assert raw_pkl.latent_avg is None  # NVIDIA pickles have none: w_avg is used
    assert raw_pth.latent_avg is not None
    assert torch.equal(raw_pth.latent_avg, outputs["latent_avg"])
    assert torch.equal(raw_pkl.state_dict["backbone.mapping.w_avg"], outputs["latent_avg"])


def test_the_loader_returns_g_ema_not_g(raw_pkl: RawGenerator) -> None:
    weights = fixture_weights()
    for key, value in raw_pkl.state_dict.items():
        expected = weights.fill(key, tuple(value.shape), value.dtype, seed=SEED_G_EMA)
        assert torch.equal(value, expected), key
    # G (non-EMA) has different weights (seed + 1000): make sure that is what we did NOT return.
    key = "backbone.synthesis.b4.conv1.weight"
    value = raw_pkl.state_dict[key]
    assert not torch.equal(value, weights.fill(key, tuple(value.shape), value.dtype, seed=SEED_G))


def test_reading_the_pkl_imports_none_of_its_modules() -> None:
    prefixes = ("training", "torch_utils", "dnnlib")
    before = {name for name in sys.modules if name.split(".")[0] in prefixes}
    read_generator_checkpoint(fixture_path(PKL))
    after = {name for name in sys.modules if name.split(".")[0] in prefixes}
    assert after == before


def test_format_is_detected_by_content_not_extension(tmp_path: Path) -> None:
    misnamed_pth = tmp_path / "generator.pkl"
    misnamed_pkl = tmp_path / "generator.safetensors"
    misnamed_pth.symlink_to(fixture_path(PTH))
    misnamed_pkl.symlink_to(fixture_path(PKL))
    assert read_generator_checkpoint(misnamed_pth).source_format == "triplanenet-pth"
    assert read_generator_checkpoint(misnamed_pkl).source_format == "nvidia-pkl"


def test_pth_with_easydict_init_kwargs_reads_without_importing_dnnlib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pth_dict: dict[str, Any]
) -> None:
    """Real converted files may pickle init_kwargs as ``dnnlib.EasyDict``: weights_only refuses it, we do not."""
    path = tmp_path / "easydict.pth"
    with monkeypatch.context() as patch:
        dnnlib = types.ModuleType("dnnlib")
        util = types.ModuleType("dnnlib.util")

        class EasyDict(dict):  # type: ignore[type-arg]
            pass

        EasyDict.__module__ = "dnnlib.util"
        EasyDict.__qualname__ = "EasyDict"
        util.EasyDict = EasyDict  # type: ignore[attr-defined]
        dnnlib.util = util  # type: ignore[attr-defined]
        patch.setitem(sys.modules, "dnnlib", dnnlib)
        patch.setitem(sys.modules, "dnnlib.util", util)
        kwargs = EasyDict(pth_dict["init_kwargs"])
        kwargs["mapping_kwargs"] = EasyDict(kwargs["mapping_kwargs"])
        kwargs["sr_kwargs"] = EasyDict(kwargs["sr_kwargs"])
        torch.save({**pth_dict, "init_kwargs": kwargs}, path)
    assert "dnnlib" not in sys.modules
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, map_location="cpu", weights_only=True)
    raw = read_generator_checkpoint(path)
    assert raw.source_format == "triplanenet-pth"
    assert raw.init_kwargs == pth_dict["init_kwargs"]
    assert type(raw.init_kwargs["mapping_kwargs"]) is dict
    assert raw.state_dict.keys() == {k for k in pth_dict["G_ema"] if k != "dataset_label_std"}
    assert all(torch.equal(v, pth_dict["G_ema"][k]) for k, v in raw.state_dict.items())
    assert torch.equal(raw.latent_avg, pth_dict["latent_avg"])
    assert "dnnlib" not in sys.modules


def test_safe_torch_load(tmp_path: Path, pth_dict: dict[str, Any]) -> None:
    loaded = safe_torch_load(fixture_path(PTH))
    assert loaded.keys() == pth_dict.keys() and torch.equal(loaded["latent_avg"], pth_dict["latent_avg"])
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        safe_torch_load(fixture_path(PKL))
    with pytest.raises(CheckpointError, match="no such file"):
        safe_torch_load(tmp_path / "missing.pt")


def test_legacy_torch_save_format_is_read(tmp_path: Path, pth_dict: dict[str, Any]) -> None:
    path = tmp_path / "legacy.pth"
    torch.save(pth_dict, path, _use_new_zipfile_serialization=False)
    raw = read_generator_checkpoint(path)
    assert raw.source_format == "triplanenet-pth"
    assert all(torch.equal(v, pth_dict["G_ema"][k]) for k, v in raw.state_dict.items())


# ---------------------------------------------------------------------------------------------------------------
# Malicious pickles: nothing may run


class _RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


class _RunsEval:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


def _module_state(**extra: Any) -> dict[str, Any]:
    return {"_parameters": {}, "_buffers": {}, "_modules": {}, "_non_persistent_buffers_set": set(), **extra}


@pytest.mark.parametrize("payload", [_RunsShell, _RunsEval])
def test_malicious_reduce_is_refused_and_never_runs(tmp_path: Path, payload: type) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": payload(marker)}, protocol=4))
    with pytest.raises(CheckpointError, match="refuses to load global") as excinfo:
        read_generator_checkpoint(path)
    message = _one_line_error(excinfo)
    assert "not a plain EG3D network pickle" in message and str(path) in message
    assert not marker.exists()


def test_malicious_object_nested_in_a_network_state_is_refused(tmp_path: Path, fake_persistent: type) -> None:
    marker = tmp_path / "pwned"
    g_ema = fake_persistent("TriPlaneGenerator", _module_state(_modules={"backbone": _RunsShell(marker)}))
    data = pickle.dumps({"G_ema": g_ema}, protocol=4)
    path = tmp_path / "nested.pkl"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match=r"refuses to load global posix\.system|refuses to load global os\."):
        read_generator_checkpoint(path)
    assert not marker.exists()


def test_embedded_module_source_is_never_executed(tmp_path: Path, fake_persistent: type) -> None:
    marker = tmp_path / "source_ran"
    source = f"open({str(marker)!r}, 'w').close()\nraise SystemExit('embedded source executed')\n"
    g_ema = fake_persistent(
        "TriPlaneGenerator",
        _module_state(_init_kwargs={"z_dim": 512}, neural_rendering_resolution=64),
        module_src=source,
    )
    path = tmp_path / "source.pkl"
    path.write_bytes(pickle.dumps({"G_ema": g_ema}, protocol=4))
    raw = read_generator_checkpoint(path)
    assert not marker.exists()
    assert raw.state_dict == {} and raw.init_kwargs == {"z_dim": 512} and raw.neural_rendering_resolution == 64
    with pytest.raises(CheckpointError, match="do not fit the generator architecture"):
        load_generator(path)
    assert not marker.exists()


def test_a_pickled_stylegan_generator_is_rejected(tmp_path: Path, fake_persistent: type) -> None:
    path = tmp_path / "stylegan.pkl"
    path.write_bytes(pickle.dumps({"G_ema": fake_persistent("Generator", _module_state())}, protocol=4))
    with pytest.raises(CheckpointError, match="not an EG3D TriPlaneGenerator"):
        read_generator_checkpoint(path)


def _global_call(module: str, name: str) -> bytes:
    """Protocol-4 pickle that calls ``module.name()`` (GLOBAL, EMPTY_TUPLE, REDUCE, STOP)."""
    return b"\x80\x04c" + f"{module}\n{name}\n".encode() + b")R."


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("builtins", "eval"),
        ("builtins", "exec"),
        ("builtins", "getattr"),
        ("builtins", "__import__"),
        ("os", "system"),
        ("posix", "system"),
        ("subprocess", "Popen"),
        ("subprocess", "check_output"),
        ("torch", "load"),
        ("torch.serialization", "load"),
        ("numpy", "load"),
        ("pickle", "loads"),
        ("importlib", "import_module"),
        ("training.networks_stylegan2", "modulated_conv2d"),
        ("torch_utils.persistence", "persistent_class"),
        ("dnnlib.util", "call_func_by_name"),
        ("some_unknown_package", "Thing"),
        ("torch.nn.modules.module", "_global_forward_hooks"),
    ],
)
def test_globals_outside_the_allow_list_are_refused(module: str, name: str) -> None:
    import io

    with pytest.raises(CheckpointError, match=re.escape(f"refuses to load global {module}.{name}:")):
        safe_load_pickle(io.BytesIO(_global_call(module, name)))


def test_eg3d_and_torch_nn_classes_become_inert_placeholders() -> None:
    import io

    for module, name in [("training.triplane", "OSGDecoder"), ("torch.nn.modules.activation", "Softplus")]:
        obj = safe_load_pickle(io.BytesIO(_global_call(module, name)))
        assert type(obj).__name__ == name and not isinstance(obj, torch.nn.Module)
        assert obj.qualified_name == f"{module}.{name}"


def test_plain_data_survives_the_restricted_unpickler() -> None:
    import io

    tensor = torch.arange(4.0)
    tensor.note = "python attribute"  # type: ignore[attr-defined]  # pickled via _rebuild_from_type_v2
    data = {
        "array": np.arange(6, dtype=np.float32).reshape(2, 3),
        "scalar": np.int64(3),
        "tensor": tensor,
        "param": torch.nn.Parameter(torch.ones(2)),
        "nested": [(1, 2.5, "x", None, True)],
    }
    loaded = safe_load_pickle(io.BytesIO(pickle.dumps(data, protocol=4)))
    assert np.array_equal(loaded["array"], data["array"]) and loaded["array"].dtype == np.float32
    assert loaded["scalar"] == 3
    assert torch.equal(loaded["tensor"], tensor) and torch.equal(loaded["param"], torch.ones(2))
    assert loaded["nested"] == data["nested"]
    # Type names that are allowed only as data cannot be called.
    with pytest.raises(CheckpointError):
        safe_load_pickle(io.BytesIO(_global_call("torch", "Tensor")))
    with pytest.raises(CheckpointError):
        safe_load_pickle(io.BytesIO(_global_call("numpy", "ndarray")))


def test_numpy_object_arrays_are_refused() -> None:
    import io

    with pytest.raises(CheckpointError, match="Python objects"):
        safe_load_pickle(io.BytesIO(pickle.dumps(np.dtype(object), protocol=4)))
    assert safe_load_pickle(io.BytesIO(pickle.dumps(np.float64(0.5), protocol=4))) == 0.5


# ---------------------------------------------------------------------------------------------------------------
# Broken and wrong files


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _half(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    return _write(dst, data[: len(data) // 2])


def _zip_without_torch(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    return path


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda d: d / "missing.pkl", "no such file"),
        (lambda d: d, "is a directory"),
        (lambda d: _write(d / "empty.pth", b""), "empty"),
        (lambda d: _write(d / "random.pth", np.random.default_rng(0).bytes(4096)), "unrecognised file format"),
        (lambda d: _zip_without_torch(d / "other.zip"), "not a PyTorch checkpoint"),
        (lambda d: _half(fixture_path(PTH), d / "half.pth"), "truncated or corrupt"),
        (lambda d: _half(fixture_path(PKL), d / "half.pkl"), "truncated or corrupt"),
        (lambda d: _write(d / "no_gema.pkl", pickle.dumps({"G": None, "D": None}, protocol=4)), "no 'G_ema'"),
        (lambda d: _write(d / "list.pkl", pickle.dumps([1, 2], protocol=4)), "not an EG3D snapshot dict"),
    ],
    ids=["missing", "directory", "empty", "random", "zip", "half-pth", "half-pkl", "no-G_ema", "list-pkl"],
)
def test_bad_files_raise_one_line_checkpoint_errors(tmp_path: Path, make: Any, pattern: str) -> None:
    path = make(tmp_path)
    with pytest.raises(CheckpointError, match=pattern) as excinfo:
        read_generator_checkpoint(path)
    assert str(path) in _one_line_error(excinfo)
    with pytest.raises(CheckpointError, match=pattern):
        load_generator(path)


def test_pth_without_g_ema_hints_at_a_model_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "triplanenet_final.pth"
    torch.save({"state_dict": {"decoder.x": torch.zeros(1)}, "opts": {"lr": 1e-4}}, path)
    with pytest.raises(CheckpointError, match=r"no 'G_ema'.*TriPlaneNet model checkpoint"):
        read_generator_checkpoint(path)


def test_pth_holding_arbitrary_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"G_ema": {}, "init_kwargs": {"z_dim": 512}, "hook": _RunsShell(tmp_path / "pwned")}, path)
    with pytest.raises(CheckpointError, match="refuses to load global"):
        read_generator_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def test_wrong_architecture_is_reported_with_key_details(tmp_path: Path, pth_dict: dict[str, Any]) -> None:
    wider = {**pth_dict, "init_kwargs": {**pth_dict["init_kwargs"], "channel_max": 128}}
    path = tmp_path / "wider.pth"
    torch.save(wider, path)
    with pytest.raises(CheckpointError, match=r"shape \(file vs model\).*backbone\.synthesis") as excinfo:
        load_generator(path)
    _one_line_error(excinfo)

    missing = {**pth_dict, "G_ema": {k: v for k, v in pth_dict["G_ema"].items() if "decoder.net.2" not in k}}
    path = tmp_path / "missing.pth"
    torch.save(missing, path)
    with pytest.raises(CheckpointError, match=r"2 missing: decoder\.net\.2\.weight, decoder\.net\.2\.bias"):
        load_generator(path)


def test_unsupported_superresolution_module_is_a_config_error(tmp_path: Path, pth_dict: dict[str, Any]) -> None:
    kwargs = dict(pth_dict["init_kwargs"])
    kwargs["rendering_kwargs"] = {
        **kwargs["rendering_kwargs"],
        "superresolution_module": "training.superresolution.SuperresolutionHybridDeepfp32",
    }
    path = tmp_path / "srdeep.pth"
    torch.save({**pth_dict, "init_kwargs": kwargs}, path)
    with pytest.raises(ConfigError, match="SuperresolutionHybridDeepfp32") as excinfo:
        load_generator(path)
    assert str(path) in _one_line_error(excinfo)
    # A known class whose output size contradicts img_resolution (the official constructor asserts it).
    kwargs["rendering_kwargs"] = {
        **kwargs["rendering_kwargs"],
        "superresolution_module": "training.superresolution.SuperresolutionHybrid2X",
    }
    path = tmp_path / "sr2x.pth"
    torch.save({**pth_dict, "init_kwargs": kwargs}, path)
    with pytest.raises(ConfigError, match=r"SuperresolutionHybrid2X makes 128² images but img_resolution is 512"):
        load_generator(path)


def test_invalid_device_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="invalid device"):
        load_generator(fixture_path(PTH), device="not-a-device")


_PREFIXES = [b"", b"\x80\x04", b"\x80\x02", b"PK\x03\x04", (64).to_bytes(8, "little") + b'{"__metadata__":']


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=st.sampled_from(_PREFIXES), body=st.binary(min_size=0, max_size=300))
def test_arbitrary_bytes_only_ever_raise_checkpoint_error(prefix: bytes, body: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.bin"
        path.write_bytes(prefix + body)
        try:
            raw = read_generator_checkpoint(path)
        except CheckpointError as exc:
            assert "\n" not in str(exc)
        else:  # a random pickle that happens to be a valid dict with G_ema is astronomically unlikely
            pytest.fail(f"random bytes were accepted as a checkpoint: {raw!r}")


# ---------------------------------------------------------------------------------------------------------------
# Building the module, our safetensors format


def test_load_generator_returns_a_frozen_module_with_latent_avg(outputs: dict[str, Any]) -> None:
    generator = load_generator(fixture_path(PTH))
    assert generator.neural_rendering_resolution == 128 and generator.config.neural_rendering_resolution == 128
    assert not generator.training
    assert not any(p.requires_grad for p in generator.parameters())
    assert len(generator.state_dict()) == 176 and "latent_avg" not in generator.state_dict()
    assert "latent_avg" in dict(generator.named_buffers())  # non-persistent buffer: follows .to(device)
    assert torch.equal(generator.latent_avg, outputs["latent_avg"])

    from_pkl = load_generator(fixture_path(PKL), neural_rendering_resolution=128)
    assert from_pkl.neural_rendering_resolution == 128
    assert torch.equal(from_pkl.latent_avg, outputs["latent_avg"])  # from w_avg
    for key, value in generator.state_dict().items():
        assert torch.equal(value, from_pkl.state_dict()[key]), key


def test_safetensors_round_trip(tmp_path: Path, raw_pth: RawGenerator) -> None:
    generator = load_generator(fixture_path(PTH))
    path = save_generator(generator, tmp_path / "tiny.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.safetensors"]  # no temp files left
    raw = read_generator_checkpoint(path)
    assert raw.source_format == "safetensors" and raw.dropped_keys == ()
    assert raw.config == generator.config
    assert raw.neural_rendering_resolution == 128
    assert raw.state_dict.keys() == raw_pth.state_dict.keys()  # safetensors stores keys sorted
    assert all(torch.equal(v, raw_pth.state_dict[k]) for k, v in raw.state_dict.items())
    assert raw.latent_avg is not None and torch.equal(raw.latent_avg, raw_pth.latent_avg)

    reloaded = load_generator(path)
    assert reloaded.config == generator.config
    assert torch.equal(reloaded.latent_avg, generator.latent_avg)
    assert load_generator(path, neural_rendering_resolution=64).config.neural_rendering_resolution == 64

    # Overwriting is atomic and keeps a single file; an explicit latent_avg wins.
    save_generator(generator, path, latent_avg=torch.zeros(1, 512))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.safetensors"]
    assert torch.equal(read_generator_checkpoint(path).latent_avg, torch.zeros(512))


def test_safetensors_keeps_a_custom_config(tmp_path: Path) -> None:
    """Fields that official init_kwargs cannot express (backbone size, SR widths) survive the round trip."""
    config = GeneratorConfig.tiny()
    from triplanenet.eg3d.generator import TriPlaneGenerator

    generator = TriPlaneGenerator(config)
    path = save_generator(generator, tmp_path / "custom.safetensors")
    reloaded = load_generator(path)
    assert reloaded.config == config
    assert torch.equal(reloaded.latent_avg, generator.w_avg)
    for key, value in generator.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key


def test_convert_generator_from_pkl(tmp_path: Path, raw_pkl: RawGenerator) -> None:
    dst = convert_generator(fixture_path(PKL), tmp_path / "converted.safetensors")
    raw = read_generator_checkpoint(dst)
    assert raw.neural_rendering_resolution == 64
    assert raw.config is not None and raw.config.sr_module == "training.superresolution.SuperresolutionHybrid8XDC"
    assert all(torch.equal(v, raw_pkl.state_dict[k]) for k, v in raw.state_dict.items())
    assert raw.state_dict.keys() == raw_pkl.state_dict.keys()


def test_save_generator_rejects_bad_paths(tmp_path: Path) -> None:
    from triplanenet.eg3d.generator import TriPlaneGenerator

    generator = TriPlaneGenerator(GeneratorConfig.tiny())
    with pytest.raises(CheckpointError, match=r"\.safetensors"):
        save_generator(generator, tmp_path / "model.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        save_generator(generator, tmp_path / "missing" / "model.safetensors")


def test_foreign_and_truncated_safetensors_are_rejected(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    foreign = tmp_path / "encoder.safetensors"
    save_file({"x": torch.zeros(3)}, str(foreign), metadata={"format": "something-else"})
    with pytest.raises(CheckpointError, match="not a triplanenet generator"):
        read_generator_checkpoint(foreign)

    from triplanenet.eg3d.generator import TriPlaneGenerator

    good = save_generator(TriPlaneGenerator(GeneratorConfig.tiny()), tmp_path / "good.safetensors")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_generator_checkpoint(_half(good, tmp_path / "half.safetensors"))


# ---------------------------------------------------------------------------------------------------------------
# End to end: official outputs from the loaded files (deterministic rendering, noise_mode 'const')


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@pytest.fixture(scope="module")
def generator_pkl() -> Any:
    return load_generator(fixture_path(PKL))


def test_mapping_parity_from_pkl(generator_pkl: Any, outputs: dict[str, Any]) -> None:
    with torch.no_grad():
        for psi, key in ((1.0, "ws_mapping_psi1"), (0.7, "ws_mapping_psi07")):
            ws = generator_pkl.mapping(outputs["z"], outputs["c"], truncation_psi=psi)
            torch.testing.assert_close(ws, outputs[key], atol=1e-4, rtol=1e-5)
        # The wrong network (G) would have given something else.
        ws = generator_pkl.mapping(outputs["z"], outputs["c"], truncation_psi=1.0)
        assert _max_abs(ws, outputs["G_nonema_ws_mapping_psi1"]) > 1e-2


def test_synthesis_parity_from_pkl_at_nrr64(generator_pkl: Any, outputs: dict[str, Any]) -> None:
    assert generator_pkl.neural_rendering_resolution == 64
    with torch.no_grad():
        out = generator_pkl.synthesis(outputs["ws"], outputs["c"], noise_mode="const", deterministic=True)
    assert out.image_raw.shape == (2, 3, 64, 64) and out.image.shape == (2, 3, 512, 512)
    torch.testing.assert_close(out.image_raw, outputs["image_raw"], atol=1e-4, rtol=0)
    torch.testing.assert_close(out.image_depth, outputs["image_depth"], atol=1e-4, rtol=0)
    torch.testing.assert_close(out.image, outputs["image"], atol=1e-3, rtol=0)
    assert _max_abs(out.image_raw, outputs["G_nonema_image_raw"]) > 1e-2


@pytest.mark.slow
def test_synthesis_parity_from_pth_at_nrr128(outputs: dict[str, Any]) -> None:
    generator = load_generator(fixture_path(PTH))  # .pth stores no resolution: 128, like TriPlaneNet
    assert generator.neural_rendering_resolution == 128
    with torch.no_grad():
        out = generator.synthesis(outputs["ws"], outputs["c"], noise_mode="const", deterministic=True)
    torch.testing.assert_close(out.image_raw, outputs["image_raw_nrr128"], atol=1e-4, rtol=0)
    torch.testing.assert_close(out.image_depth, outputs["image_depth_nrr128"], atol=1e-4, rtol=0)
    torch.testing.assert_close(out.image[:, :, ::4, ::4], outputs["image_nrr128_stride4"], atol=1e-3, rtol=0)
