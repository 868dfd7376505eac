"""The end-to-end demo on held-out procedural heads (with ground truth); the bundled model comes from `bundled`."""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# The bundled assets and the held-out poses live in triplanenet.bundled (the evaluation protocol needs them too, and
# this module depends on the protocol); they stay importable from here.
from triplanenet.bundled import (
    DEMO_POSES,
    DEMO_SEED,
    SIGMA_NET_FORMAT,
    default_assets_dir,
    load_default_identity_network,
    load_default_model,
    load_default_sigma_net,
)
from triplanenet.errors import CheckpointError

__all__ = [
    "DEMO_POSES",
    "DEMO_SEED",
    "SIGMA_NET_FORMAT",
    "DemoResult",
    "default_assets_dir",
    "load_default_identity_network",
    "load_default_model",
    "load_default_sigma_net",
    "metrics_markdown",
    "run_demo",
]


@dataclass
class DemoResult:
    out: Path
    table: list[dict[str, float | str]]
    seconds: float


def run_demo(
    out: str | Path,
    heads: int = 4,
    device: str | torch.device = "cpu",
    video_frames: int = 24,
    model_path: str | Path | None = None,
) -> DemoResult:
    """Render ``heads`` held-out procedural heads, invert them with the default model (first branch alone and full
    TriPlaneNet), write renders, novel views, depth, a mesh, an orbit video, a metrics table against ground truth and
    ``summary.png``: per head, input | first branch | TriPlaneNet | ground truth at the input view, then first
    branch | TriPlaneNet | ground truth at the novel view."""
    from triplanenet.eg3d.camera import camera_label
    from triplanenet.eval.metrics import depth_error
    from triplanenet.eval.protocol import image_metrics, load_identity_metric, synthetic_heads
    from triplanenet.inverters import TriPlaneNetInverter
    from triplanenet.io.atomic import write_text_atomic
    from triplanenet.io.images import image_grid, save_depth, save_image, save_png, tensor_to_uint8
    from triplanenet.io.mesh import write_ply
    from triplanenet.losses.lpips import LPIPS
    from triplanenet.synth.render import render_heads

    started = time.perf_counter()
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    if model_path is None:
        model = load_default_model(device)
    else:
        from triplanenet.io.model_checkpoints import load_triplanenet

        model = load_triplanenet(model_path, device=device)
    generator = model.decoder
    size = generator.config.img_resolution
    identity = load_identity_metric()
    try:
        lpips = LPIPS.from_file().to(device)
    except CheckpointError:
        lpips = None
    # The evaluation suite's held-out heads (triplanenet.eval.protocol.synthetic_heads) at the demo poses.
    _, truth = synthetic_heads(heads, size)
    cameras, poses = truth.cameras, [DEMO_POSES[i % len(DEMO_POSES)] for i in range(heads)]
    # Ground truth at a novel view: the input yaw mirrored (e.g. 0.35 -> -0.35; frontal inputs go to 0.5).
    novel_yaws = torch.tensor([-p[0] if abs(p[0]) > 0.1 else 0.5 for p in poses])
    novel_cameras = camera_label(novel_yaws, torch.tensor([p[1] for p in poses]))
    novel_truth = render_heads(truth.params, novel_cameras, resolution=size)
    methods = {
        "first branch only (w+-pred)": TriPlaneNetInverter(model, first_branch_only=True),
        "triplanenet": TriPlaneNetInverter(model),
    }
    rows: list[dict[str, float | str]] = []
    shown: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name, inverter in methods.items():
        inversions = inverter.invert_batch(list(truth.image), cameras)
        with torch.no_grad():
            renders = [inversion.render() for inversion in inversions]
            image = torch.cat([r.image for r in renders]).cpu()
            novel = torch.cat([inv.render(novel_cameras[i : i + 1]).image for i, inv in enumerate(inversions)]).cpu()
            depth = torch.cat([r.image_depth for r in renders]).cpu()
            input_size = model.config.input_resolution
            same = image_metrics(image, truth.image, lpips, mse_size=input_size, size=None)
            novel_metrics = image_metrics(novel, novel_truth.image, lpips, mse_size=input_size, size=None)
            row: dict[str, float | str] = {
                "method": name,
                "MSE": same["MSE"].mean().item(),
                "MS-SSIM": same["MS-SSIM"].mean().item(),
                "depth error": depth_error(depth, truth.depth, truth.mask).mean().item(),
                "novel-view MSE": novel_metrics["MSE"].mean().item(),
            }
            if lpips is not None:
                row["LPIPS"] = same["LPIPS"].mean().item()
                row["novel-view LPIPS"] = novel_metrics["LPIPS"].mean().item()
            if identity is not None:
                row["ID"] = identity.similarity(image, truth.image).mean().item()
        rows.append(row)
        shown[name] = (image, novel)
        if name != "triplanenet":
            continue
        for index, (inversion, render) in enumerate(zip(inversions, renders, strict=True)):
            head = folder / f"head{index}"
            head.mkdir(exist_ok=True)
            save_image(head / "ground_truth.png", truth.image[index])
            save_depth(head / "ground_truth_depth.png", truth.depth[index], mask=truth.mask[index])
            save_image(head / "reconstruction.png", render.image[0])
            save_depth(head / "depth.png", render.image_depth[0], mask=render.weight_sum[0])
            views = [tensor_to_uint8(v) for v in inversion.novel_views([-0.6, -0.3, 0.0, 0.3, 0.6])]
            save_png(head / "novel_views.png", image_grid(views))
            save_png(
                head / "comparison.png",
                image_grid([tensor_to_uint8(truth.image[index]), tensor_to_uint8(render.image[0]), *views]),
            )
            inversion.save(head / "inversion.safetensors")
            if index == 0:
                write_ply(head / "mesh.ply", inversion.mesh(resolution=96, level=None))
                inversion.video(head / "orbit.mp4", frames=video_frames)
    save_png(folder / "summary.png", _summary_sheet(model, truth.image, novel_truth.image, *shown.values()))
    write_text_atomic(folder / "metrics.md", metrics_markdown(rows))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[-1]))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(folder / "metrics.csv", buffer.getvalue())
    return DemoResult(folder, rows, time.perf_counter() - started)


def _summary_sheet(
    model: torch.nn.Module,
    truth: torch.Tensor,
    novel_truth: torch.Tensor,
    first_branch: tuple[torch.Tensor, torch.Tensor],
    full: tuple[torch.Tensor, torch.Tensor],
) -> np.ndarray:
    """One row per head: what the encoder saw, the two methods and the ground truth, at the input and novel view."""
    from triplanenet.io.images import labelled_sheet, tensor_to_uint8

    seen = model.pool_to_input(truth)
    rows = [
        [
            tensor_to_uint8(t)
            for t in (seen[i], first_branch[0][i], full[0][i], truth[i], first_branch[1][i], full[1][i], novel_truth[i])
        ]
        for i in range(len(truth))
    ]
    headers = ["input", "first branch", "TriPlaneNet", "truth", "first branch", "TriPlaneNet", "truth (novel)"]
    return labelled_sheet(rows, headers, group_break=4)


def metrics_markdown(rows: list[dict[str, float | str]]) -> str:
    columns = list(rows[-1])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"{row[c]:.4f}" if isinstance(row.get(c), float) else str(row.get(c, "–")) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
