"""The bundled default model on held-out procedural heads: the full system, measured against ground truth."""

from __future__ import annotations

from pathlib import Path

import pytest

from triplanenet.demo import default_assets_dir, run_demo

pytestmark = pytest.mark.skipif(
    not (default_assets_dir() / "model.safetensors").is_file(), reason="the bundled default model is not built"
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    return run_demo(tmp_path_factory.mktemp("demo"), heads=3, device="cpu", video_frames=4)


def test_second_branch_beats_the_first_branch_on_held_out_heads(demo) -> None:
    first, full = demo.table
    assert first["method"].startswith("first branch") and full["method"] == "triplanenet"
    assert full["MSE"] < first["MSE"]
    assert full["depth error"] < first["depth error"]
    # The model of issue 17 measured 0.0060 vs 0.0138 on these 3 heads (2026-12-07): the second branch removes >20 %.
    assert full["MSE"] <= 0.8 * first["MSE"]


def test_bundled_model_reconstructs_faces_not_blobs(demo) -> None:
    # Measured on these 3 held-out heads, 2026-12-07 (after the focus stage): MSE 0.0060, LPIPS 0.084, ID 0.84,
    # novel-view MSE 0.0096, depth 0.0143 (the previous model, with faceless reconstructions: MSE 0.016, LPIPS 0.38,
    # ID 0.40 on 8 heads).
    full = demo.table[1]
    assert full["MSE"] < 0.012 and full["novel-view MSE"] < 0.012
    assert full["LPIPS"] < 0.11 and full["ID"] > 0.7
    assert full["depth error"] < 0.016


def test_demo_writes_every_output(demo) -> None:
    out: Path = demo.out
    assert (out / "metrics.md").read_text().count("|") > 10
    assert (out / "metrics.csv").is_file()
    head = out / "head0"
    for name in (
        "ground_truth.png",
        "reconstruction.png",
        "novel_views.png",
        "depth.png",
        "depth.npy",
        "mesh.ply",
        "orbit.mp4",
        "inversion.safetensors",
        "comparison.png",
    ):
        assert (head / name).is_file(), name


def test_summary_sheet_has_one_row_per_head_and_seven_columns(demo) -> None:
    import numpy as np
    from PIL import Image

    from triplanenet.demo import load_default_model

    sheet = np.asarray(Image.open(demo.out / "summary.png"))
    tile = load_default_model("cpu").decoder.config.img_resolution
    rows, columns = 3, 7
    assert sheet.shape[0] >= rows * tile and sheet.shape[0] < rows * (tile + 30) + 30
    assert sheet.shape[1] >= columns * tile and sheet.shape[1] < columns * (tile + 20) + 20
    # The reconstruction tiles sit at their columns: a tile of the first row differs from the white background.
    top = sheet.shape[0] - rows * (tile + 4)
    assert sheet[top : top + tile].std() > 20


def test_bundled_identity_and_sigma_networks_load_and_run() -> None:
    import torch

    from triplanenet.demo import load_default_identity_network, load_default_sigma_net

    images = torch.rand(2, 3, 64, 64) * 2 - 1
    sigma = load_default_sigma_net().predict_sigma(images, output_size=64)
    assert sigma.shape == (2, 1, 64, 64) and bool((sigma > 0).all())
    network = load_default_identity_network()
    assert network is not None
    embedding = network(torch.nn.functional.interpolate(images, size=(64, 64)))
    torch.testing.assert_close(embedding.norm(dim=1), torch.ones(2), atol=1e-4, rtol=0)
