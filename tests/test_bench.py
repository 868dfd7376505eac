"""Benchmark runner smoke test (no timing assertions) and the fast inference settings on the CPU."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from triplanenet.bench import RESULT_KEYS, BenchConfig, build_preset_model, image_accuracy, run_benchmark
from triplanenet.cli.main import app
from triplanenet.eg3d.camera import camera_label
from triplanenet.eg3d.renderer import run_model
from triplanenet.eg3d.triplane import OSGDecoder, sample_from_planes, sample_mean_from_planes
from triplanenet.errors import ConfigError
from triplanenet.inverters.encoder import TriPlaneNetInverter
from triplanenet.perf import FastRunner, InferenceSettings, apply_fast_mode

BF16_MIN_PSNR_DB = 30.0
"""bf16 autocast vs fp32 on the tiny random model (images in [-1, 1]); measured ≈ 50 dB for a full inversion."""
BF16_MAX_ABS = 0.2


@pytest.fixture(scope="module")
def tiny_model():
    return build_preset_model("tiny", torch.device("cpu"), seed=0)


def _images(model, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    size = model.config.input_resolution
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(batch, 3, size, size, generator=generator) * 2 - 1
    cameras = camera_label(torch.linspace(-0.3, 0.3, batch), torch.zeros(batch))
    return images, cameras


def test_cli_bench_tiny_writes_json_and_markdown(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    result = CliRunner().invoke(
        app,
        ["bench", "--preset", "tiny", "--repeats", "1", "--batch-sizes", "1,2", "--modes", "fp32,bf16",
         "--device", "cpu", "--threads", "1", "--out", str(out)],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads((out / "bench.json").read_text())
    meta = data["meta"]
    for key in ("device", "device_name", "torch", "threads", "config", "model", "date_utc"):
        assert key in meta
    assert meta["threads"] == 1 and meta["torch"] == torch.__version__
    rows = data["results"]
    seen = {(r["workload"], r["batch"], r["mode"]) for r in rows}
    for workload in ("encode", "render", "invert"):
        for batch in (1, 2):
            assert {(workload, batch, "fp32"), (workload, batch, "bf16")} <= seen
    assert {("train_step", 1, "fp32"), ("train_step", 2, "fp32")} <= seen
    for row in rows:
        assert set(RESULT_KEYS) <= set(row)
        assert row["median_s"] > 0 and row["peak_memory_bytes"] > 0
        if row["mode"] == "bf16":
            assert row["psnr_db"] > BF16_MIN_PSNR_DB
    markdown = (out / "bench.md").read_text()
    assert "| workload | batch | mode |" in markdown and "train_step" in markdown


def test_a_mode_that_fails_is_skipped_and_reported_while_the_others_run(monkeypatch) -> None:
    """Out of memory at one (workload, batch, mode) must not end a long benchmark run (one-shot GPU sessions)."""
    original = FastRunner.__call__

    def flaky(self, *tensors):
        if self.settings.dtype == "bf16" and tensors[0].shape[0] == 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return original(self, *tensors)

    monkeypatch.setattr(FastRunner, "__call__", flaky)
    report = run_benchmark(
        BenchConfig(preset="tiny", modes=("fp32", "bf16"), batch_sizes=(1, 2), repeats=1, workloads=("render",))
    )
    seen = {(r["batch"], r["mode"]) for r in report.results}
    assert seen == {(1, "fp32"), (1, "bf16"), (2, "fp32")}
    assert report.meta["skipped"] == [{"workload": "render", "batch": 2, "mode": "bf16", "reason": "out of memory"}]
    assert "Not measured: render at batch 2 in bf16 (out of memory)." in report.to_markdown()


def test_bf16_autocast_inversion_is_close_to_fp32(tiny_model) -> None:
    images, cameras = _images(tiny_model, 2)
    plain = tiny_model(images, cameras, deterministic=True).image.detach()
    runner = FastRunner(
        lambda x, c: tiny_model(x, c, deterministic=True).image, InferenceSettings(dtype="bf16"), torch.device("cpu")
    )
    fast = runner(images, cameras)
    assert fast.dtype == torch.float32 and not fast.is_inference()
    max_abs, psnr = image_accuracy(plain, fast)
    assert 0 < max_abs < BF16_MAX_ABS
    assert psnr > BF16_MIN_PSNR_DB


def test_default_fast_settings_are_bit_identical_to_the_plain_inverter(tiny_model) -> None:
    images, cameras = _images(tiny_model, 2)
    plain = TriPlaneNetInverter(tiny_model).invert_batch(images, cameras)
    # Same thread count as the plain run: a different count may change the reduction order of CPU convolutions.
    settings = InferenceSettings(threads=torch.get_num_threads())
    fast = TriPlaneNetInverter(tiny_model, fast=settings).invert_batch(images, cameras)
    for a, b in zip(plain, fast, strict=True):
        assert torch.equal(a.ws, b.ws) and torch.equal(a.offsets, b.offsets)
        assert torch.equal(a.render().image, b.render().image)
    # Inference-mode results are handed back as normal tensors (usable as the start of an optimisation).
    assert not fast[0].ws.is_inference()
    assert fast[0].ws.clone().requires_grad_(True).sum().grad_fn is not None


def test_reused_planes_are_exact_at_batch_one(tiny_model) -> None:
    images, cameras = _images(tiny_model, 1)
    recomputed = TriPlaneNetInverter(tiny_model).invert_batch(images, cameras)[0]
    reused = TriPlaneNetInverter(tiny_model, reuse_planes=True).invert_batch(images, cameras)[0]
    assert reused._planes is not None
    assert torch.equal(recomputed.planes(), reused.planes())


def test_cuda_graphs_on_cpu_is_a_config_error(tiny_model) -> None:
    with pytest.raises(ConfigError, match="CUDA graphs"):
        TriPlaneNetInverter(tiny_model, fast=InferenceSettings(cuda_graphs=True))
    with pytest.raises(ConfigError, match="CUDA graphs"):
        apply_fast_mode(tiny_model, InferenceSettings.from_mode("bf16+cuda_graphs"))


def test_mode_names_parse_and_bad_ones_are_refused() -> None:
    settings = InferenceSettings.from_mode("bf16+channels_last+compile")
    assert settings.dtype == "bf16" and settings.channels_last and settings.compile and not settings.is_exact
    assert settings.label == "bf16+compile+channels_last"
    assert InferenceSettings.from_mode("fp32").is_exact
    with pytest.raises(ConfigError, match="unknown fast-mode part"):
        InferenceSettings.from_mode("int8")
    with pytest.raises(ConfigError, match="preset"):
        BenchConfig(preset="huge")
    with pytest.raises(ConfigError, match="workload"):
        BenchConfig(workloads=("encode", "fly"))
    with pytest.raises(ConfigError, match="fp16"):
        run_benchmark(BenchConfig(modes=("fp16",), batch_sizes=(1,), repeats=1, workloads=("render",)))


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 3),
    channels=st.integers(1, 9),
    size=st.integers(2, 9),
    points=st.integers(1, 300),
    seed=st.integers(0, 2**16),
)
def test_fused_plane_mean_is_bit_identical(batch: int, channels: int, size: int, points: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    planes = torch.randn(batch, 3, channels, size, size, generator=generator)
    coords = (torch.rand(batch, points, 3, generator=generator) - 0.5) * 1.2
    expected = sample_from_planes(planes, coords, 1.0).mean(dim=1)
    assert torch.equal(sample_mean_from_planes(planes, coords, 1.0), expected)
    decoder = OSGDecoder(n_features=channels, hidden_dim=8, output_dim=4)
    with torch.no_grad():
        plain = decoder(sample_from_planes(planes, coords, 1.0))
        fused = run_model(planes, decoder, coords, 1.0)
    assert torch.equal(plain[0], fused[0]) and torch.equal(plain[1], fused[1])
    # With autograd (training) the fused path takes another branch; same values, and gradients flow.
    planes.requires_grad_(True)
    grad_plain = decoder(sample_from_planes(planes, coords, 1.0))
    grad_fused = run_model(planes, decoder, coords, 1.0)
    assert torch.equal(grad_plain[0], grad_fused[0]) and torch.equal(grad_plain[1], grad_fused[1])
    (first,) = torch.autograd.grad(grad_plain[0].sum() + grad_plain[1].sum(), planes)
    (second,) = torch.autograd.grad(grad_fused[0].sum() + grad_fused[1].sum(), planes)
    torch.testing.assert_close(first, second, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["triplanenet", "triplanenet+cttr", "w+-pred"])
def test_invert_and_render_returns_the_forward_render_and_planes_the_inversions_reuse(tiny_model, method: str) -> None:
    from triplanenet.inverters import build_inverter

    images, cameras = _images(tiny_model, 1)
    inverter = build_inverter(method, tiny_model)
    batch = inverter.invert_and_render(images, cameras)
    (inversion,) = batch.inversions
    again = inversion.render()
    # Batch 1: the forward pass's final render is exactly what rendering the inversion gives.
    assert torch.equal(batch.image, again.image) and torch.equal(batch.opacity, again.weight_sum)
    assert torch.equal(batch.planes, inversion.planes()) and torch.equal(batch.ws, inversion.ws)
    plain = build_inverter(method, tiny_model).invert(images[0], cameras[0])
    assert torch.equal(plain.render().image, batch.image)  # same result as the plain path that recomputes planes


def test_invert_and_render_in_a_batch_matches_single_images(tiny_model) -> None:
    images, cameras = _images(tiny_model, 3)
    batch = TriPlaneNetInverter(tiny_model).invert_and_render(images, cameras)
    assert batch.image.shape[0] == 3 and batch.opacity.shape[1] == 1
    for i in range(3):
        single = TriPlaneNetInverter(tiny_model).invert_and_render(images[i : i + 1], cameras[i : i + 1])
        torch.testing.assert_close(batch.image[i : i + 1], single.image, atol=1e-4, rtol=0)


def test_render_context_applies_the_fast_settings(tiny_model) -> None:
    inverter = TriPlaneNetInverter(copy.deepcopy(tiny_model), fast=InferenceSettings.from_mode("bf16"))
    with inverter.render_context():
        assert torch.is_autocast_enabled("cpu") and not torch.is_grad_enabled()
    with TriPlaneNetInverter(tiny_model).render_context():
        assert not torch.is_autocast_enabled("cpu") and not torch.is_grad_enabled()


def test_cpu_allocator_tuning_is_applied_by_the_command_and_can_be_turned_off(tmp_path: Path) -> None:
    import os
    import platform
    import subprocess
    import sys

    if not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"):
        pytest.skip("mallopt tuning is glibc-only")
    from triplanenet.perf import tune_cpu_allocator

    assert tune_cpu_allocator(0) is False  # nothing to apply
    thresholds = {}
    for setting in ("1", "0"):
        out = tmp_path / f"bench{setting}"
        env = dict(os.environ, TRIPLANENET_MALLOC_TUNING=setting, OMP_NUM_THREADS="1")
        script = Path(sys.executable).with_name("triplanenet")  # the installed console script, as users run it
        entry = [str(script)] if script.is_file() else [sys.executable, "-m", "triplanenet.cli.main"]
        command = [*entry, "bench", "--preset", "tiny", "--batch-sizes", "1",
                   "--repeats", "1", "--workloads", "render", "--device", "cpu", "--out", str(out)]  # fmt: skip
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        thresholds[setting] = json.loads((out / "bench.json").read_text())["meta"]["cpu_allocator_threshold"]
        markdown = (out / "bench.md").read_text()
        assert ("CPU allocator tuned: 1024 MiB" in markdown) == (setting == "1")
    assert thresholds == {"1": 1 << 30, "0": None}
