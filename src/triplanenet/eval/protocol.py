"""The evaluation protocol behind ``triplanenet eval``: data, per-method inversion loop with timing, metrics, means.

Metrics per image (images in [-1, 1]):

* ``MSE``, ``LPIPS`` (AlexNet), ``MS-SSIM``: reconstruction at the input view vs the input, both resized to 256²
  (bilinear; the official ``metrics.py`` resizes to 256² too).
* ``ID``: cosine of face embeddings of the reconstruction vs the input (same view); ``ID@yaw``: the render at each
  novel yaw (paper protocol, default −0.8…0.8 rad, pitch 0, the input's intrinsics) vs the **input**.
* ``novel MSE`` / ``novel LPIPS``: renders at the novel yaws vs ground-truth renders there (procedural world only).
* ``depth error``: mean |Δ distance along the ray| on foreground pixels vs ground-truth depth, where it exists.
* ``AD``: geometric error (:mod:`triplanenet.eval.geometry`) vs the reference mesh, where one exists.
* ``s/image``: wall-clock seconds of ``inverter.invert`` per image (model already loaded; the first image includes
  any warm-up).

Data: ``synthetic`` = held-out procedural heads (identities from :data:`triplanenet.bundled.DEMO_SEED`, never in the
training worlds) rendered on the fly, with depth, landmarks, novel-view ground truth and meshes; or a folder in the
official layout (``dataset.json`` + images). A folder written by
:func:`triplanenet.synth.dataset.build_synth_dataset` (with ``ground_truth.pt``) gets the same ground truth. Any
folder may add reference meshes for AD: ``references/<image stem>.ply|.obj`` and ``references/<image stem>.json``
holding ``{"landmarks_3d": 5×3 on the mesh, "landmarks_2d": 5×2 (x, y) pixels in the input image}``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from triplanenet.errors import CheckpointError, ConfigError, TriplaneNetError
from triplanenet.eval.metrics import depth_error, ms_ssim, mse
from triplanenet.synth.dataset import GROUND_TRUTH, read_ground_truth

PAPER_NOVEL_YAWS: tuple[float, ...] = (-0.8, -0.4, 0.0, 0.4, 0.8)
"""Novel-view yaws (radians) of the identity-at-novel-views protocol."""
METRIC_SIZE = 256
"""Side at which MSE / LPIPS / MS-SSIM are computed (as the official metrics)."""


# ----------------------------------------------------------------------------------------------------------------
# Data


@dataclass
class EvalItem:
    """One evaluation image with whatever ground truth exists."""

    name: str
    image: torch.Tensor  # (3, R, R) in [-1, 1]
    camera: torch.Tensor  # (25,)
    depth: torch.Tensor | None = None  # (1, R, R) ground-truth distance along the ray
    mask: torch.Tensor | None = None  # (1, R, R) foreground
    params: Any = None  # HeadParams of one procedural identity: novel-view ground truth and the reference mesh
    landmarks_2d: torch.Tensor | None = None  # (5, 2) pixels in ``image``
    landmarks_3d: np.ndarray | None = None  # (5, 3) on the reference mesh
    reference_mesh: Path | None = None


@dataclass
class EvalSet:
    source: str
    items: list[EvalItem]


def synthetic_heads(heads: int, resolution: int, seed: int | None = None) -> tuple[EvalSet, Any]:
    """``heads`` held-out procedural heads at the demo poses; returns the set and the rendered SynthSample."""
    from triplanenet.bundled import DEMO_POSES, DEMO_SEED
    from triplanenet.eg3d.camera import camera_label
    from triplanenet.synth.params import HeadParams
    from triplanenet.synth.render import render_heads

    if heads < 1:
        raise ConfigError(f"need at least one head, got {heads}")
    seed = DEMO_SEED if seed is None else seed
    poses = [DEMO_POSES[i % len(DEMO_POSES)] for i in range(heads)]
    cameras = camera_label(torch.tensor([p[0] for p in poses]), torch.tensor([p[1] for p in poses]))
    identities = HeadParams.sample(torch.Generator().manual_seed(seed), heads)
    truth = render_heads(identities, cameras, resolution=resolution)
    items = [
        EvalItem(
            name=f"head{i:03d}",
            image=truth.image[i],
            camera=cameras[i],
            depth=truth.depth[i],
            mask=truth.mask[i],
            params=identities[i : i + 1],
            landmarks_2d=truth.landmarks_2d[i],
            landmarks_3d=truth.landmarks_3d[i].double().numpy(),
        )
        for i in range(heads)
    ]
    return EvalSet(f"synthetic ({heads} held-out procedural heads, seed {seed}, {resolution}²)", items), truth


def read_reference_landmarks(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``{"landmarks_3d": 5×3, "landmarks_2d": 5×2}`` of a reference mesh -> float64 arrays (5, 3), (5, 2).

    Raises:
        TriplaneNetError: unreadable JSON, missing keys, wrong shapes or non-finite values.
    """
    try:
        meta = json.loads(path.read_text())
        landmarks_3d = np.asarray(meta["landmarks_3d"], dtype=np.float64)
        landmarks_2d = np.asarray(meta["landmarks_2d"], dtype=np.float64)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise TriplaneNetError(
            f"{path}: unreadable reference landmarks ({type(exc).__name__}: {exc}); expected "
            '{"landmarks_3d": 5x3 numbers, "landmarks_2d": 5x2 numbers}'
        ) from None
    if landmarks_3d.shape != (5, 3) or landmarks_2d.shape != (5, 2):
        raise TriplaneNetError(
            f"{path}: landmarks_3d must be 5x3 and landmarks_2d 5x2, got {landmarks_3d.shape} and {landmarks_2d.shape}"
        )
    if not (np.isfinite(landmarks_3d).all() and np.isfinite(landmarks_2d).all()):
        raise TriplaneNetError(f"{path}: the reference landmarks contain NaN or infinite values")
    return landmarks_3d, landmarks_2d


def folder_set(root: str | Path, resolution: int, limit: int | None = None) -> EvalSet:
    """Images of an official-layout folder (sorted by name), with ground truth when the folder has it."""
    from triplanenet.data import FaceDataset
    from triplanenet.synth.params import HeadParams

    folder = Path(root)
    dataset = FaceDataset(folder, resolution=resolution, split="all")
    truth = None
    if (folder / GROUND_TRUTH).is_file():
        truth = read_ground_truth(folder / GROUND_TRUTH)
    by_name = {Path(n).stem: i for i, n in enumerate(truth["names"])} if truth else {}
    count = len(dataset) if limit is None else min(limit, len(dataset))
    items = []
    for index in range(count):
        entry = dataset[index]
        item = EvalItem(name=entry["name"], image=entry["image"], camera=entry["camera"])
        stem = Path(entry["name"]).name
        if truth is not None and stem in by_name:
            k = by_name[stem]
            depth, mask = truth["depth"][k].float(), truth["mask"][k].float()
            item.depth, item.mask = depth, mask
            item.landmarks_2d = truth["landmarks_2d"][k] * (resolution / depth.shape[-1])
            item.params = HeadParams(truth["params"][truth["identity"][k]][None])
        refs = folder / "references"
        mesh = next((p for p in (refs / f"{stem}.ply", refs / f"{stem}.obj") if p.is_file()), None)
        if mesh is not None and (refs / f"{stem}.json").is_file():
            landmarks_3d, landmarks_2d = read_reference_landmarks(refs / f"{stem}.json")
            item.reference_mesh = mesh
            item.landmarks_3d = landmarks_3d
            from PIL import Image

            with Image.open(folder / dataset.files[index]) as original:
                width = original.size[0]
            item.landmarks_2d = torch.from_numpy(landmarks_2d).float() * (resolution / width)
        items.append(item)
    dataset.close()
    return EvalSet(f"{folder} ({count} images)", items)


# ----------------------------------------------------------------------------------------------------------------
# Metric helpers (shared with the demo)


def resize_for_metric(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """(B, 3, H, W) to ``size``²: box average for integer shrink factors, bilinear otherwise; None keeps it."""
    if size is None or images.shape[-1] == size:
        return images
    if images.shape[-1] > size and images.shape[-1] % size == 0:
        return F.adaptive_avg_pool2d(images, (size, size))
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def image_metrics(
    prediction: torch.Tensor,
    target: torch.Tensor,
    lpips: torch.nn.Module | None,
    mse_size: int | None = METRIC_SIZE,
    size: int | None = METRIC_SIZE,
) -> dict[str, torch.Tensor]:
    """Per-image (B,) ``MSE`` (at ``mse_size``), ``MS-SSIM`` and ``LPIPS`` (at ``size``) of (B, 3, H, W) images."""
    a, b = resize_for_metric(prediction.float(), size), resize_for_metric(target.float(), size)
    values = {
        "MSE": mse(resize_for_metric(prediction.float(), mse_size), resize_for_metric(target.float(), mse_size)),
        "MS-SSIM": ms_ssim(a, b),
    }
    if lpips is not None:
        values["LPIPS"] = torch.stack([lpips(a[i : i + 1], b[i : i + 1]).reshape(()) for i in range(len(a))])
    return values


@dataclass
class IdentityMetric:
    """A face-embedding network for identity similarity, and a printable name of which one it is."""

    name: str
    network: torch.nn.Module
    crop: Callable[[torch.Tensor], torch.Tensor]

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, D) L2-normalised embeddings of (B, 3, H, W) images in [-1, 1]."""
        return F.normalize(self.network(self.crop(images.float())), dim=1)

    def similarity(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(B,) cosine similarity."""
        return (self.embed(a) * self.embed(b)).sum(dim=1)


def load_identity_metric(path: str | Path | None = None) -> IdentityMetric | None:
    """The identity network: ``path`` (ArcFace IR-SE-50 ``model_ir_se50.pth``, CurricularFace IR-101
    ``CurricularFace_Backbone.pth``, or our ``.safetensors`` identity format), else the bundled network trained on
    procedural identities (offline fallback; meaningful only on the procedural world), else None.

    Face crop: the pSp/TriPlaneNet identity-loss crop (scaled to the image size) pooled to the network's input size;
    no MTCNN re-detection (the official metric re-detects; our inputs are already aligned crops).
    """
    from triplanenet.train.identity_net import face_crops

    if path is None:
        from triplanenet.bundled import load_default_identity_network

        network = load_default_identity_network()
        if network is None:
            return None
        name = "bundled procedural-world IR-SE identity network (offline fallback)"
    else:
        from triplanenet.io.registry import resolve_checkpoint

        file = resolve_checkpoint(path)  # the names curricularface / ir-se50 -> their cached downloads
        if file.suffix == ".safetensors":
            from triplanenet.train.identity_net import load_identity_safetensors

            network = load_identity_safetensors(file)
            name = f"identity network {file.name}"
        else:
            from triplanenet.encoders.config import IRSEBackboneConfig
            from triplanenet.losses.identity import load_identity_network

            try:
                network = load_identity_network(file)
                name = f"ArcFace IR-SE-50 ({file.name})"
            except CheckpointError:
                network = load_identity_network(file, IRSEBackboneConfig.curricularface_ir101())
                name = f"CurricularFace IR-101 ({file.name})"
    size = int(network.cfg.input_size)
    return IdentityMetric(name, network.eval(), lambda x: face_crops(x, size))


# ----------------------------------------------------------------------------------------------------------------
# Evaluation


@dataclass
class EvalOptions:
    novel_yaws: tuple[float, ...] = PAPER_NOVEL_YAWS
    mesh_ad: bool = True
    mesh_resolution: int = 128
    mesh_level: float | None = 10.0
    reference_resolution: int = 160
    ad_samples: int = 100_000
    metric_size: int = METRIC_SIZE
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    seed: int = 0


@dataclass
class MethodResult:
    method: str
    rows: list[dict[str, float | str]]  # one per image
    reconstructions: torch.Tensor  # (N, 3, R, R)
    novel: torch.Tensor  # (N, V, 3, R, R)

    def mean(self) -> dict[str, float | str]:
        keys = [k for k in self.rows[0] if k != "image"]
        out: dict[str, float | str] = {"method": self.method}
        for key in keys:
            if key == "method":
                continue
            values = [float(r[key]) for r in self.rows if isinstance(r.get(key), float) and math.isfinite(r[key])]
            out[key] = float(np.mean(values)) if values else float("nan")
        return out


@dataclass
class EvalResult:
    data: EvalSet
    methods: list[MethodResult]
    identity_network: str
    options: EvalOptions
    seconds: float
    novel_truth: torch.Tensor | None = None  # (N, V, 3, R, R)


def _novel_labels(camera: torch.Tensor, yaws: Sequence[float], generator: torch.nn.Module) -> torch.Tensor:
    from triplanenet.eg3d.camera import novel_view_labels

    rendering = generator.config.rendering
    return novel_view_labels(
        camera.reshape(1, 25).cpu(), list(yaws), radius=rendering.avg_camera_radius, pivot=rendering.avg_camera_pivot
    ).reshape(-1, 25)


def predicted_landmarks(inversion: Any, landmarks_2d: torch.Tensor, image_resolution: int) -> np.ndarray:
    """(5, 3) landmarks on an inversion: the 2D landmarks unprojected with its rendered depth at the input camera."""
    from triplanenet.eval.geometry import unproject_pixels

    depth = inversion.render().image_depth[0].cpu()
    return unproject_pixels(landmarks_2d, depth, inversion.camera.cpu(), image_resolution).double().numpy()


def evaluate(
    model: Any,
    methods: Sequence[str],
    data: EvalSet,
    options: EvalOptions | None = None,
    identity: IdentityMetric | None = None,
    lpips: torch.nn.Module | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> EvalResult:
    """Invert every image of ``data`` with every method and measure it (see the module docstring)."""
    from triplanenet.eval.geometry import average_distance, read_mesh
    from triplanenet.inverters import build_inverter
    from triplanenet.synth.render import head_landmarks, head_mesh, render_heads

    options = options or EvalOptions()
    started = time.perf_counter()
    generator = model.decoder
    size = generator.config.img_resolution
    yaws = tuple(options.novel_yaws)
    # Ground truth shared by every method: novel-view renders and reference meshes.
    novel_truth = None
    if data.items and all(item.params is not None for item in data.items) and yaws:
        novel_truth = torch.stack(
            [
                render_heads(item.params, _novel_labels(item.camera, yaws, generator), resolution=size).image
                for item in data.items
            ]
        )
    references: dict[int, Any] = {}
    if options.mesh_ad:
        for index, item in enumerate(data.items):
            if item.landmarks_2d is None:
                continue  # our landmarks come from the 2D ones; without them there is nothing to align
            if item.reference_mesh is not None and item.landmarks_3d is not None:
                references[index] = read_mesh(item.reference_mesh)
            elif item.params is not None:
                references[index] = head_mesh(item.params, resolution=options.reference_resolution, with_colors=False)
                if item.landmarks_3d is None:
                    item.landmarks_3d = head_landmarks(item.params)[0].double().numpy()
    results = []
    for method in methods:
        torch.manual_seed(options.seed)
        inverter = build_inverter(method, model, **options.method_options.get(method, {}))
        rows: list[dict[str, float | str]] = []
        recon, novel = [], []
        for index, item in enumerate(data.items):
            tick = time.perf_counter()
            inversion = inverter.invert(item.image, item.camera)
            seconds = time.perf_counter() - tick
            with torch.no_grad():
                render = inversion.render()
                image = render.image.float().cpu()
                views = inversion.novel_views(list(yaws)).float().cpu() if yaws else image[:0]
            target = item.image[None].to(image)
            row: dict[str, float | str] = {"image": item.name}
            row.update(
                {
                    k: float(v[0])
                    for k, v in image_metrics(image, target, lpips, options.metric_size, options.metric_size).items()
                }
            )
            if identity is not None:
                row["ID"] = float(identity.similarity(image, target)[0])
                if yaws:
                    sims = identity.similarity(views, target.expand(len(views), -1, -1, -1))
                    for yaw, sim in zip(yaws, sims, strict=True):
                        row[f"ID@{yaw:+.1f}"] = float(sim)
                    row["ID novel"] = float(sims.mean())
            if novel_truth is not None:
                novel_metrics = image_metrics(
                    views, novel_truth[index], lpips, options.metric_size, options.metric_size
                )
                row["novel MSE"] = float(novel_metrics["MSE"].mean())
                if "LPIPS" in novel_metrics:
                    row["novel LPIPS"] = float(novel_metrics["LPIPS"].mean())
            if item.depth is not None and item.mask is not None:
                row["depth error"] = float(
                    depth_error(render.image_depth.float().cpu(), item.depth[None].float(), item.mask[None].float())[0]
                )
            if index in references:
                predicted = inversion.mesh(
                    resolution=options.mesh_resolution, level=options.mesh_level, with_colors=False
                )
                landmarks = predicted_landmarks(inversion, item.landmarks_2d, item.image.shape[-1])
                geo = average_distance(
                    references[index],
                    item.landmarks_3d,
                    predicted,
                    landmarks,
                    samples=options.ad_samples,
                    seed=options.seed,
                )
                row["AD"] = geo.ad
            row["s/image"] = seconds
            rows.append(row)
            recon.append(image[0])
            novel.append(views)
            log(
                f"{method} {item.name}: "
                + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if isinstance(v, float) and k != "s/image")
            )
        results.append(MethodResult(method, rows, torch.stack(recon), torch.stack(novel)))
    return EvalResult(
        data=data,
        methods=results,
        identity_network=identity.name if identity is not None else "none (no identity network available)",
        options=options,
        seconds=time.perf_counter() - started,
        novel_truth=novel_truth,
    )
