"""``triplanenet generate``: sample heads from a generator and write views, depth, meshes and orbit videos."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import torch
import typer

from triplanenet.cli.common import (
    check_sizes,
    console,
    console_warnings,
    output_folder,
    parse_floats,
    parse_int_ranges,
    progress,
    resolve_device,
    user_errors,
)
from triplanenet.eg3d.config import GeneratorConfig
from triplanenet.eg3d.generator import TriPlaneGenerator
from triplanenet.errors import TriplaneNetError
from triplanenet.io.atomic import finite_json, write_text_atomic
from triplanenet.io.images import image_grid, save_depth, save_image, save_png, tensor_to_uint8
from triplanenet.io.mesh import write_obj, write_ply
from triplanenet.io.video import write_mp4

BUNDLED = "bundled"
"""``--generator bundled``: the generator inside the bundled default model (128² procedural heads)."""

PRESETS = {
    "tiny": GeneratorConfig.tiny,
    "ffhq512": GeneratorConfig.ffhq512,
    "ffhqrebalanced512": GeneratorConfig.ffhqrebalanced512,
    "afhqcats512": GeneratorConfig.afhqcats512,
    "shapenet128": GeneratorConfig.shapenet128,
}


def build_generator(
    generator_path: Path | None, preset: str, weights_seed: int, device: torch.device
) -> TriPlaneGenerator:
    """Load a checkpoint (``bundled``: the bundled default model's generator), or build a random-weight generator
    from a named config preset."""
    if generator_path is not None and str(generator_path) == BUNDLED and not generator_path.exists():
        from triplanenet.bundled import load_default_model

        return load_default_model(device).decoder.eval().requires_grad_(False)
    if generator_path is not None:
        from triplanenet.io.checkpoints import load_generator

        return load_generator(generator_path, device=device)
    if preset not in PRESETS:
        raise TriplaneNetError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    torch.manual_seed(weights_seed)
    generator = TriPlaneGenerator(PRESETS[preset]())
    return generator.eval().requires_grad_(False).to(device)


@user_errors
def generate(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (created if missing).")] = Path(
        "outputs/generate"
    ),
    generator_path: Annotated[
        Path | None,
        typer.Option(
            "--generator",
            "-g",
            help="EG3D checkpoint: NVIDIA .pkl, TriPlaneNet .pth, our .safetensors, an official name "
            "(eg3d-ffhq512-128, eg3d-shapenetcars128-64, ...; see `triplanenet download --list`), or `bundled` "
            "(the generator of the bundled default model).",
        ),
    ] = None,
    preset: Annotated[
        str,
        typer.Option(
            help="Without --generator: random weights with this architecture (tiny | ffhq512 | "
            "ffhqrebalanced512 | afhqcats512 | shapenet128)."
        ),
    ] = "tiny",
    weights_seed: Annotated[int, typer.Option(help="Seed of the random weights of a preset.")] = 0,
    seeds: Annotated[str, typer.Option(help="Latent seeds, e.g. 0-3,7.")] = "0-3",
    trunc: Annotated[float, typer.Option(help="Truncation psi (1 = none, 0.7 = typical).")] = 0.7,
    views: Annotated[str, typer.Option(help="Yaw offsets in radians, comma-separated.")] = "-0.4,0,0.4",
    pitch: Annotated[float, typer.Option(help="Pitch in radians for the views (negative = camera above).")] = -0.2,
    mesh: Annotated[bool, typer.Option("--mesh/--no-mesh", help="Extract a mesh by marching cubes.")] = False,
    mesh_resolution: Annotated[int, typer.Option(help="Density grid side for --mesh.")] = 128,
    mesh_format: Annotated[str, typer.Option(help="ply | obj")] = "ply",
    mesh_level: Annotated[
        float | None,
        typer.Option(
            help="Iso-level of raw density (default: EG3D's 10; for random-weight presets the 90th percentile)."
        ),
    ] = None,
    video: Annotated[bool, typer.Option("--video/--no-video", help="Write an orbit MP4 per seed.")] = False,
    frames: Annotated[int, typer.Option(help="Frames of the orbit video.")] = 48,
    fps: Annotated[int, typer.Option(help="Frame rate of the orbit video.")] = 24,
    batch_size: Annotated[int, typer.Option(help="Views rendered per batch.")] = 4,
    device: Annotated[str, typer.Option(help="cpu | cuda | auto")] = "auto",
) -> None:
    """Sample random heads: images from several yaws, depth maps, optional mesh and orbit video.

    Example: triplanenet generate --generator ffhq512-128.pkl --seeds 0-3 --trunc 0.7 --mesh --video --out out/
    """
    output_folder(out)
    from triplanenet.eg3d.shapes import OFFICIAL_LEVEL, extract_mesh
    from triplanenet.views import default_label, orbit_frames, render_labels

    if mesh_format not in ("ply", "obj"):
        raise TriplaneNetError(f"unknown --mesh-format {mesh_format!r}: use ply or obj")
    if frames < 1 or batch_size < 1 or fps < 1:
        raise TriplaneNetError("--frames, --batch-size and --fps must be >= 1")
    check_sizes(mesh_resolution=mesh_resolution)
    seed_list = parse_int_ranges(seeds)
    yaw_list = parse_floats(views, "views")
    torch_device = resolve_device(device)
    generator = build_generator(generator_path, preset, weights_seed, torch_device)
    level = mesh_level if mesh_level is not None or generator_path is None else OFFICIAL_LEVEL
    out.mkdir(parents=True, exist_ok=True)
    config = generator.config
    frontal = default_label(generator).to(torch_device)
    view_labels = torch.cat([default_label(generator, yaw, pitch) for yaw in yaw_list])
    summary: dict[str, object] = {"seeds": seed_list, "views": yaw_list, "pitch": pitch, "files": []}
    files: list[str] = summary["files"]  # type: ignore[assignment]
    steps = len(seed_list) * (1 + int(mesh) + int(video))
    with progress() as bar, torch.no_grad():
        task = bar.add_task("generating", total=steps)
        for seed in seed_list:
            rng = torch.Generator().manual_seed(seed)
            z = torch.randn(1, config.z_dim, generator=rng).to(torch_device)
            # EG3D conditions the mapping on the frontal camera and renders the other views from the same ws.
            ws = generator.mapping(z, frontal, truncation_psi=trunc)
            planes = generator.planes(ws)
            strip = []
            index = 0
            for out_batch in render_labels(generator, planes, ws, view_labels, batch_size):
                for image, depth, weight in zip(
                    out_batch.image, out_batch.image_depth, out_batch.weight_sum, strict=True
                ):
                    stem = out / f"seed{seed:04d}_yaw{yaw_list[index]:+.2f}"
                    save_image(f"{stem}.png", image)
                    save_depth(f"{stem}_depth.png", depth, mask=weight)
                    files += [f"{stem.name}.png", f"{stem.name}_depth.png", f"{stem.name}_depth.npy"]
                    strip.append(tensor_to_uint8(image))
                    index += 1
            save_png(out / f"seed{seed:04d}_views.png", image_grid(strip))
            files.append(f"seed{seed:04d}_views.png")
            bar.advance(task)
            if mesh:
                with console_warnings(f"seed {seed}"):
                    shape = extract_mesh(generator, planes, resolution=mesh_resolution, level=level)
                path = out / f"seed{seed:04d}.{mesh_format}"
                (write_ply if mesh_format == "ply" else write_obj)(path, shape)
                files.append(path.name)
                bar.advance(task)
            if video:
                path = out / f"seed{seed:04d}_orbit.mp4"
                write_mp4(path, orbit_frames(generator, planes, ws, frames, batch_size), fps=fps)
                files.append(path.name)
                bar.advance(task)
    write_text_atomic(out / "summary.json", json.dumps(finite_json(summary), indent=2, allow_nan=False))
    console.print(f"wrote {len(files)} files for {len(seed_list)} seed(s) to [bold]{out}[/]")
