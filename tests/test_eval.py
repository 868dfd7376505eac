"""Evaluation suite: metric and geometry known answers, landmark unprojection, the eval CLI and the ablation runner."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage import measure
from typer.testing import CliRunner

from triplanenet.errors import ConfigError
from triplanenet.eval.geometry import (
    apply_transform,
    average_distance,
    face_ellipsoid,
    inter_ocular_distance,
    point_to_mesh_distance,
    read_mesh,
    umeyama,
    unproject_pixels,
)
from triplanenet.eval.metrics import ms_ssim, mse
from triplanenet.eval.protocol import image_metrics, resize_for_metric
from triplanenet.io.mesh import Mesh, write_obj, write_ply

LANDMARKS = np.array([[-0.3, 0.2, 0.9], [0.3, 0.2, 0.9], [0.0, 0.0, 1.1], [-0.2, -0.35, 0.9], [0.2, -0.35, 0.9]])


def sphere_mesh(radius: float, centre: np.ndarray, n: int = 64) -> Mesh:
    """Marching-cubes sphere with every vertex projected exactly onto the sphere."""
    axis = np.linspace(-1, 1, n)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    vertices, faces, _, _ = measure.marching_cubes(np.sqrt(x**2 + y**2 + z**2) - 0.7, 0.0)
    vertices = vertices / (n - 1) * 2 - 1
    vertices = vertices / np.linalg.norm(vertices, axis=1, keepdims=True) * radius + centre
    return Mesh(vertices.astype(np.float32), faces.astype(np.int64))


# ----------------------------------------------------------------------------------------------------------------
# Image metrics


def test_identical_images_have_zero_mse_and_unit_ms_ssim() -> None:
    image = torch.nn.functional.avg_pool2d(torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0)), 3, 1)
    values = image_metrics(image * 2 - 1, image * 2 - 1, lpips=None)
    torch.testing.assert_close(values["MSE"], torch.zeros(2))
    torch.testing.assert_close(values["MS-SSIM"], torch.ones(2))


def test_shifted_images_known_mse() -> None:
    # A vertical-stripe image (columns alternate -1 / +1) shifted by one column differs by 2 everywhere: MSE 4.
    stripes = (torch.arange(16) % 2 * 2 - 1).float().expand(1, 3, 16, 16)
    torch.testing.assert_close(mse(stripes, torch.roll(stripes, 1, dims=3)), torch.tensor([4.0]))
    # A ramp shifted by k columns (circularly) has a known MSE: (W-k)·(k·δ)² + k·((W-k)·δ)² over W columns.
    width, k, delta = 32, 3, 1.0 / 32
    ramp = (torch.arange(width) * delta).expand(1, 3, width, width)
    expected = ((width - k) * (k * delta) ** 2 + k * ((width - k) * delta) ** 2) / width
    torch.testing.assert_close(mse(torch.roll(ramp, k, dims=3), ramp), torch.tensor([expected]))
    smooth = torch.nn.functional.avg_pool2d(
        torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(1)), 7, 1
    )
    assert ms_ssim(smooth, torch.roll(smooth, 2, 3)).item() < ms_ssim(smooth, torch.roll(smooth, 1, 3)).item() < 1.0


def test_metric_resizing_to_256() -> None:
    image = torch.rand(1, 3, 128, 128)
    assert resize_for_metric(image, 256).shape[-1] == 256
    torch.testing.assert_close(resize_for_metric(image, 64), torch.nn.functional.avg_pool2d(image, 2))
    assert resize_for_metric(image, None) is image


# ----------------------------------------------------------------------------------------------------------------
# Umeyama


def _rotation(seed_values: list[float]) -> np.ndarray:
    q, r = np.linalg.qr(np.asarray(seed_values, dtype=np.float64).reshape(3, 3))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


floats = st.floats(-1.0, 1.0, allow_nan=False)


@settings(max_examples=40, deadline=None)
@given(
    points=st.lists(floats, min_size=15, max_size=15),
    rot=st.lists(floats, min_size=9, max_size=9),
    scale=st.floats(0.3, 3.0),
    shift=st.lists(st.floats(-5, 5), min_size=3, max_size=3),
)
def test_umeyama_recovers_a_similarity_transform(points, rot, scale, shift) -> None:
    src = np.asarray(points).reshape(5, 3)
    centred = src - src.mean(axis=0)
    matrix = np.asarray(rot).reshape(3, 3)
    if np.linalg.svd(centred, compute_uv=False)[-1] < 0.2 or abs(np.linalg.det(matrix)) < 0.05:
        return  # degenerate (near-planar points or a near-singular draw): nothing to recover uniquely
    rotation, translation = _rotation(rot), np.asarray(shift)
    dst = scale * src @ rotation.T + translation
    s, r, t = umeyama(src, dst, with_scale=True)
    assert math.isclose(s, scale, rel_tol=1e-6)
    np.testing.assert_allclose(r, rotation, atol=1e-6)
    np.testing.assert_allclose(t, translation, atol=1e-5)
    assert np.linalg.det(r) > 0
    # Rigid alignment of a rigidly moved copy is exact too, and never reflects.
    s1, r1, t1 = umeyama(src, src @ rotation.T + translation, with_scale=False)
    assert s1 == 1.0
    np.testing.assert_allclose(apply_transform(src, s1, r1, t1), src @ rotation.T + translation, atol=1e-6)


def test_umeyama_rejects_degenerate_input() -> None:
    with pytest.raises(ConfigError):
        umeyama(np.zeros((5, 3)), np.ones((5, 3)))
    with pytest.raises(ConfigError):
        umeyama(np.zeros((5, 3)), np.ones((4, 3)))


# ----------------------------------------------------------------------------------------------------------------
# Face region and AD


def test_face_ellipsoid_frame_and_membership() -> None:
    region = face_ellipsoid(LANDMARKS, radii=(1.0, 1.5, 0.5), back=0.5)
    iod = inter_ocular_distance(LANDMARKS)
    assert iod == pytest.approx(0.6)
    np.testing.assert_allclose(region.axes[0], [1, 0, 0], atol=1e-12)  # left eye -> right eye
    np.testing.assert_allclose(region.axes[1], [0, 1, 0], atol=1e-12)  # mouth -> eyes
    np.testing.assert_allclose(region.axes[2], [0, 0, 1], atol=1e-12)  # out of the face, towards the nose
    np.testing.assert_allclose(region.centre, [0.0, -0.075, 0.9 - 0.3], atol=1e-12)
    np.testing.assert_allclose(region.radii, [0.6, 0.9, 0.3])
    inside = region.centre + np.array([[0, 0, 0], [0.59, 0, 0], [0, -0.89, 0], [0, 0, 0.29]])
    outside = region.centre + np.array([[0.61, 0, 0], [0, 0.91, 0], [0, 0, -0.31]])
    assert region.contains(inside).all()
    assert not region.contains(outside).any()
    # The frame follows the landmarks: mirrored through the face plane, "forward" still points at the nose.
    flipped = LANDMARKS * [1, 1, -1]
    assert face_ellipsoid(flipped).axes[2] @ [0, 0, -1] == pytest.approx(1.0)


def test_point_to_mesh_distance_is_exact_for_a_triangle() -> None:
    triangle = Mesh(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32), np.array([[0, 1, 2]]))
    points = np.array([[0.2, 0.2, 0.5], [-1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [2.0, -1.0, 0.0]])
    expected = [0.5, 1.0, math.sqrt(0.5), math.sqrt(2.0)]
    np.testing.assert_allclose(point_to_mesh_distance(points, triangle, samples=64), expected, atol=1e-7)


def test_ad_of_a_mesh_against_itself_is_zero() -> None:
    mesh = sphere_mesh(1.0, LANDMARKS.mean(axis=0))
    result = average_distance(mesh, LANDMARKS, mesh, LANDMARKS, samples=50_000)
    assert result.ad < 1e-3 and result.median < 1e-9 and result.landmark_rmse < 1e-9 and result.points > 100


@pytest.mark.parametrize("scale", [0.8, 1.1])
def test_ad_against_a_scaled_copy_matches_the_analytic_value(scale: float) -> None:
    """Sphere of radius r centred on the landmarks' centroid, prediction = the whole scene scaled by s about the
    origin. The rigid Umeyama fit of s·L onto L has R = I and moves the centroid back, so the predicted sphere becomes
    concentric with radius s·r: every reference point is |1 − s|·r from it, i.e. AD = |1 − s|·r / IOD."""
    radius, centre = 1.0, LANDMARKS.mean(axis=0)
    reference = sphere_mesh(radius, centre)
    predicted = Mesh(reference.vertices * scale, reference.faces)
    result = average_distance(reference, LANDMARKS, predicted, LANDMARKS * scale, samples=50_000)
    expected = abs(1 - scale) * radius / inter_ocular_distance(LANDMARKS)
    assert result.ad == pytest.approx(expected, rel=0.01)
    assert result.median == pytest.approx(expected, rel=0.01)
    # A similarity alignment undoes the scale completely.
    assert average_distance(reference, LANDMARKS, predicted, LANDMARKS * scale, with_scale=True).ad < 1e-3
    # AD is invariant to a rigid motion of the prediction (the alignment removes it).
    rotation = _rotation([0.3, -0.2, 0.9, 0.1, 0.5, -0.4, 0.7, 0.2, 0.1])
    moved = Mesh((predicted.vertices @ rotation.T + [1, 2, 3]).astype(np.float32), predicted.faces)
    moved_result = average_distance(reference, LANDMARKS, moved, (LANDMARKS * scale) @ rotation.T + [1, 2, 3])
    assert moved_result.ad == pytest.approx(expected, rel=0.01)


def test_reference_meshes_round_trip_through_ply_and_obj(tmp_path: Path) -> None:
    mesh = sphere_mesh(1.0, np.zeros(3), n=16)
    mesh.colors = np.full((len(mesh.vertices), 3), 200, np.uint8)
    write_ply(tmp_path / "m.ply", mesh)
    write_obj(tmp_path / "m.obj", mesh)
    for name in ("m.ply", "m.obj"):
        loaded = read_mesh(tmp_path / name)
        np.testing.assert_allclose(loaded.vertices, mesh.vertices, atol=1e-5)
        np.testing.assert_array_equal(loaded.faces, mesh.faces)
    with pytest.raises(ConfigError):
        (tmp_path / "bad.ply").write_text("not a mesh")
        read_mesh(tmp_path / "bad.ply")


# ----------------------------------------------------------------------------------------------------------------
# Landmark unprojection


def test_unprojection_lands_on_a_known_plane() -> None:
    from triplanenet.eg3d.camera import camera_label, split_label
    from triplanenet.eg3d.rays import generate_rays
    from triplanenet.synth.render import project_points

    resolution, plane_z = 32, 0.15
    camera = camera_label(torch.tensor([0.3]), torch.tensor([-0.1]))
    cam2world, intrinsics = split_label(camera)
    origins, dirs = generate_rays(cam2world, intrinsics, resolution)
    depth = ((plane_z - origins[0, :, 2]) / dirs[0, :, 2]).reshape(1, resolution, resolution)
    # Landmark pixels given at a 4× larger image resolution, on the depth map's pixel centres.
    image_resolution = 4 * resolution
    cells = torch.tensor([[3, 5], [16, 16], [28, 9], [10, 30], [0, 0]], dtype=torch.float32)
    pixels = (cells + 0.5) * 4
    points = unproject_pixels(pixels, depth, camera[0], image_resolution)
    torch.testing.assert_close(points[:, 2], torch.full((5,), plane_z), atol=1e-5, rtol=0)
    back, _ = project_points(points[None], camera, image_resolution)
    torch.testing.assert_close(back[0], pixels, atol=1e-3, rtol=0)


# ----------------------------------------------------------------------------------------------------------------
# End to end


def _default_model_missing() -> bool:
    from triplanenet.demo import default_assets_dir

    return not (default_assets_dir() / "model.safetensors").is_file()


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.skipif(_default_model_missing(), reason="the bundled default model is not built")
def test_eval_cli_writes_a_deterministic_report(tmp_path: Path) -> None:
    from triplanenet.cli.main import app

    runner = CliRunner()
    outputs = []
    for run in ("a", "b"):
        out = tmp_path / run
        args = ["eval", "--method", "triplanenet,w+-pred", "--data", "synthetic", "--heads", "2", "--out", str(out)]
        args += ["--device", "cpu", "--mesh-resolution", "48", "--reference-resolution", "64", "--yaws", "-0.8,0,0.8"]
        result = runner.invoke(app, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        outputs.append(out)
    first, second = outputs
    for name in ("report.md", "metrics.csv", "per_image.csv", "comparison.png", "novel_views.png"):
        assert (first / name).is_file()
    rows = _read_csv(first / "metrics.csv")
    assert [r["method"] for r in rows] == ["triplanenet", "w+-pred"]
    for row in rows:
        for key in ("MSE", "LPIPS", "MS-SSIM", "ID", "ID novel", "novel MSE", "depth error", "AD", "s/image"):
            if key == "LPIPS" and key not in row:
                continue
            assert math.isfinite(float(row[key])), key
        assert 0 < float(row["MSE"]) < 1 and 0 < float(row["MS-SSIM"]) <= 1 and 0 < float(row["AD"]) < 2
    again = _read_csv(second / "metrics.csv")
    for a, b in zip(rows, again, strict=True):
        assert {k: v for k, v in a.items() if k != "s/image"} == {k: v for k, v in b.items() if k != "s/image"}
    for name in ("comparison.png", "novel_views.png"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    report = (first / "report.md").read_text()
    assert "identity network: bundled procedural-world" in report and "| triplanenet |" in report


def test_eval_cli_rejects_unknown_methods(tmp_path: Path) -> None:
    from triplanenet.cli.main import app

    result = CliRunner().invoke(app, ["eval", "--method", "nope", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "unknown method" in result.output


@pytest.mark.skipif(_default_model_missing(), reason="the bundled default model is not built")
def test_ablation_runner_smoke(tmp_path: Path) -> None:
    from triplanenet.eval.ablations import AblationSettings, run_synthetic_samples_ablation

    settings = AblationSettings(steps=2, add_triplanenet=1, batch_size=2, world_identities=4, world_views=2, heads=1)
    result = run_synthetic_samples_ablation(tmp_path, counts=(0, 2), settings=settings, log=lambda _m: None)
    assert [r["synthetic samples"] for r in result.rows] == [0, 2]
    assert all(math.isfinite(float(r["MSE"])) for r in result.rows)
    for suffix in ("md", "csv", "png"):
        assert (tmp_path / f"synthetic_samples.{suffix}").is_file()
    assert (tmp_path / "synthetic_samples.png").read_bytes()[:4] == b"\x89PNG"
    run = json.loads((tmp_path / "runs" / "synthetic_0" / "config.json").read_text())
    assert (run["triplanenet_version"], run["lr_triplane"], run["model"]) == (2, 3e-3, "tiny")  # the paper's model


def test_folder_data_with_ground_truth_and_reference_meshes(tmp_path: Path) -> None:
    from triplanenet.eval.protocol import folder_set
    from triplanenet.synth.dataset import build_synth_dataset

    folder = build_synth_dataset(tmp_path / "world", identities=2, views=1, resolution=32, seed=3)
    data = folder_set(folder, resolution=64)
    assert [item.name for item in data.items] == ["id00000_v00", "id00001_v00"]
    first = data.items[0]
    assert first.image.shape == (3, 64, 64) and first.depth.shape == (1, 32, 32) and first.params is not None
    truth = torch.load(folder / "ground_truth.pt", weights_only=True)
    torch.testing.assert_close(first.landmarks_2d, truth["landmarks_2d"][0] * 2)  # 32² truth -> 64² input
    # A reference mesh + landmarks file (2D landmarks in the original 32² image's pixels) overrides the procedural one.
    refs = folder / "references"
    write_ply(refs / "id00001_v00.ply", sphere_mesh(1.0, np.zeros(3), n=12))
    meta = {"landmarks_3d": LANDMARKS.tolist(), "landmarks_2d": [[4, 5], [10, 5], [8, 8], [5, 12], [11, 12]]}
    (refs / "id00001_v00.json").write_text(json.dumps(meta))
    second = folder_set(folder, resolution=64, limit=2).items[1]
    assert second.reference_mesh == refs / "id00001_v00.ply"
    np.testing.assert_allclose(second.landmarks_3d, LANDMARKS)
    torch.testing.assert_close(second.landmarks_2d[0], torch.tensor([8.0, 10.0]))
    assert len(folder_set(folder, resolution=64, limit=1).items) == 1


def test_method_options_from_the_command_line() -> None:
    from triplanenet.cli.eval import parse_method_options

    parsed = parse_method_options(["triplanenet", "w+-opt", "pti"], 50, ["w+-opt:lr=0.05", "pti:seed=3"])
    assert parsed == {"w+-opt": {"steps": 50, "lr": 0.05}, "pti": {"steps": 50, "latent_steps": 50, "seed": 3}}
    with pytest.raises(ConfigError):
        parse_method_options(["w+-opt"], None, ["pti:steps=3"])
    with pytest.raises(ConfigError):
        parse_method_options(["w+-opt"], None, ["steps=3"])


def test_bad_ground_truth_and_reference_files_give_clear_errors(tmp_path: Path) -> None:
    from triplanenet.errors import CheckpointError, TriplaneNetError
    from triplanenet.eval.protocol import folder_set, read_reference_landmarks
    from triplanenet.synth.dataset import build_synth_dataset, read_ground_truth

    folder = build_synth_dataset(tmp_path / "world", identities=1, views=1, resolution=32, seed=5)
    truth = folder / "ground_truth.pt"
    good = truth.read_bytes()
    truth.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="unreadable ground truth"):
        folder_set(folder, resolution=64)
    torch.save({"names": []}, truth)
    with pytest.raises(CheckpointError, match="not a ground-truth file"):
        read_ground_truth(truth)
    with pytest.raises(CheckpointError, match="file not found"):
        read_ground_truth(tmp_path / "missing.pt")

    meta = tmp_path / "ref.json"
    for content, message in (
        ("{not json", "unreadable reference landmarks"),
        (json.dumps({"landmarks_3d": [[0, 0, 0]] * 5}), "unreadable reference landmarks"),
        (json.dumps({"landmarks_3d": [[0, 0]] * 5, "landmarks_2d": [[0, 0]] * 5}), "must be 5x3"),
        (json.dumps({"landmarks_3d": [[0, 0, float("nan")]] * 5, "landmarks_2d": [[0, 0]] * 5}), "NaN"),
    ):
        meta.write_text(content)
        with pytest.raises(TriplaneNetError, match=message):
            read_reference_landmarks(meta)
    meta.write_text(json.dumps({"landmarks_3d": [[0, 0, 1]] * 5, "landmarks_2d": [[1, 2]] * 5}))
    landmarks_3d, landmarks_2d = read_reference_landmarks(meta)
    assert landmarks_3d.shape == (5, 3) and landmarks_2d.shape == (5, 2)
