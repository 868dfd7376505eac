"""``triplanenet directions`` (GANSpace) and ``triplanenet edit`` (latent edits of a saved inversion)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from triplanenet.cli.common import (
    CheckpointOption,
    DeviceOption,
    GeneratorOption,
    ModelOption,
    PresetOption,
    check_sizes,
    console,
    console_warnings,
    load_cli_model,
    output_folder,
    parse_floats,
    progress,
    resolve_device,
    user_errors,
)
from triplanenet.errors import ConfigError
from triplanenet.io.atomic import write_json_atomic


def parse_layers(text: str | None, num_ws: int) -> tuple[int, int] | None:
    """``"0-4"`` -> (0, 5) (inclusive on the command line, stop-exclusive inside); None/"all" -> None."""
    if text is None or text.strip().lower() in ("", "all"):
        return None
    start, _, stop = text.partition("-")
    try:
        first = int(start)
        last = int(stop) if stop else first
    except ValueError:
        raise ConfigError(f"cannot parse --layers {text!r}: use an inclusive range like 0-4, or 'all'") from None
    if not 0 <= first <= last < num_ws:
        raise ConfigError(
            f"--layers {text} is outside the generator's W+ layers: use a layer range within 0-{num_ws - 1}"
        )
    return first, last + 1


@user_errors
def directions(
    out: Annotated[Path, typer.Option("--out", "-o", help="Direction bundle to write (.safetensors).")] = Path(
        "directions.safetensors"
    ),
    samples: Annotated[int, typer.Option(help="Number of sampled z -> w codes.")] = 10_000,
    components: Annotated[int, typer.Option(help="Principal components to keep (pc0 = largest variance).")] = 10,
    seed: Annotated[int, typer.Option(help="Seed of the z samples.")] = 0,
    layers: Annotated[
        str | None, typer.Option(help="W+ layers the components act on, inclusive (e.g. 0-4); default all.")
    ] = None,
    npy: Annotated[
        Path | None, typer.Option(help="Also write each component as <folder>/pcK.npy (InterFaceGAN style).")
    ] = None,
    model_path: ModelOption = None,
    checkpoint: CheckpointOption = None,
    generator: GeneratorOption = None,
    preset: PresetOption = None,
    device: DeviceOption = "auto",
) -> None:
    """GANSpace: PCA of sampled W codes of the model's generator, saved as named directions pc0, pc1, ...

    Strength is measured in standard deviations of the samples along each component.
    Example: triplanenet directions --out dirs.safetensors --samples 10000 --components 10
    """
    from triplanenet.editing.directions import compute_ganspace, save_direction_npy

    torch_device = resolve_device(device)
    model = load_cli_model(model_path, checkpoint, generator, preset, torch_device)
    gen = model.decoder
    span = parse_layers(layers, gen.num_ws)
    space = compute_ganspace(gen, samples=samples, components=components, seed=seed)
    space.save(out, layers=span)
    if npy is not None:
        for name, direction in space.directions(span).items():
            save_direction_npy(npy / f"{name}.npy", direction.vector * direction.scale)
    ratios = ", ".join(f"pc{k} {100 * r:.1f}%" for k, r in enumerate(space.variance_ratio.tolist()))
    console.print(f"wrote {components} GANSpace directions to [bold]{out}[/] (variance: {ratios})", highlight=False)


@user_errors
def edit(
    inversion_path: Annotated[Path, typer.Argument(metavar="INVERSION", help="inversion.safetensors from invert.")],
    direction: Annotated[str, typer.Option(help="Named direction (pc0, ...) or an InterFaceGAN-style .npy file.")],
    strength: Annotated[float | None, typer.Option(help="Edit strength (GANSpace: in σ; .npy: × the vector).")] = None,
    strengths: Annotated[
        str | None, typer.Option(help="Several strengths for a sweep, e.g. -2,0,2 (instead of --strength).")
    ] = None,
    directions_file: Annotated[
        Path | None,
        typer.Option("--directions", help="Bundle from `triplanenet directions` (default: GANSpace computed now)."),
    ] = None,
    layers: Annotated[str | None, typer.Option(help="W+ layers to edit, inclusive (e.g. 0-4); default all.")] = None,
    views: Annotated[str, typer.Option(help="Novel-view yaw offsets in radians.")] = "-0.5,0,0.5",
    offsets: Annotated[
        str, typer.Option(help="ΔT of eq. 6: absorb (strength 0 = the inversion exactly) or keep (file's offsets).")
    ] = "absorb",
    fit_steps: Annotated[int, typer.Option(help="Adam steps fitting w ∈ W to the inversion's W+ planes.")] = 200,
    mesh: Annotated[bool, typer.Option("--mesh/--no-mesh", help="Write a PLY mesh per strength.")] = False,
    mesh_resolution: Annotated[int, typer.Option(help="Density grid side for --mesh.")] = 128,
    video: Annotated[bool, typer.Option("--video/--no-video", help="Write an orbit MP4 per strength.")] = False,
    frames: Annotated[int, typer.Option(help="Frames of the orbit video.")] = 48,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("outputs/edit"),
    model_path: ModelOption = None,
    checkpoint: CheckpointOption = None,
    generator: GeneratorOption = None,
    preset: PresetOption = None,
    device: DeviceOption = "auto",
) -> None:
    """Edit a saved inversion along a direction: T_edit = (G(w) + ΔT) + G(w_edit) − G(w) (TriPlaneNet supp. eq. 6).

    Writes per strength the edited render at the input camera, a novel-view strip, the edited inversion (and with
    --mesh / --video a PLY and an orbit MP4), plus sweep.png and edit.json.
    Example: triplanenet edit out/img/inversion.safetensors --direction pc1 --strengths -2,0,2 --video --out edits/
    """
    output_folder(out)
    from triplanenet.editing.directions import compute_ganspace, load_directions, resolve_direction
    from triplanenet.editing.edit import edited_inversion, make_edit_base
    from triplanenet.inversion import Inversion
    from triplanenet.io.images import image_grid, save_image, save_png, tensor_to_uint8
    from triplanenet.io.mesh import write_ply

    if (strength is None) == (strengths is None):
        raise ConfigError("give exactly one of --strength S or --strengths S1,S2,...")
    values = [strength] if strength is not None else parse_floats(strengths or "", "strengths")
    yaws = parse_floats(views, "views")
    if offsets not in ("absorb", "keep"):
        raise ConfigError(f"unknown --offsets {offsets!r}: use absorb or keep")
    if fit_steps < 0 or frames < 1:
        raise ConfigError("--fit-steps must be >= 0 and --frames >= 1")
    check_sizes(mesh_resolution=mesh_resolution)
    torch_device = resolve_device(device)
    model = load_cli_model(model_path, checkpoint, generator, preset, torch_device)
    gen = model.decoder
    inversion = Inversion.load(inversion_path, gen)
    bundle = None
    if not (direction.lower().endswith(".npy") or Path(direction).is_file()):
        if directions_file is not None:
            bundle = load_directions(directions_file, gen.config.w_dim, gen.num_ws)
        else:
            console.print("no --directions bundle given: computing GANSpace directions (10000 samples, seed 0)")
            bundle = compute_ganspace(gen).directions()
    chosen = resolve_direction(direction, gen.config.w_dim, gen.num_ws, bundle)
    span = parse_layers(layers, gen.num_ws)
    base = make_edit_base(inversion, offsets=offsets, steps=fit_steps)  # type: ignore[arg-type]
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    sweep = []
    with progress() as bar:
        task = bar.add_task("editing", total=len(values))
        for value in values:
            edited = edited_inversion(base, chosen, value, span)
            stem = f"{chosen.name}_{value:+.2f}"
            render = edited.render().image[0]
            save_image(out / f"{stem}.png", render)
            sweep.append(tensor_to_uint8(render))
            save_png(out / f"{stem}_views.png", image_grid([tensor_to_uint8(v) for v in edited.novel_views(yaws)]))
            edited.save(out / f"{stem}_inversion.safetensors")
            files = [f"{stem}.png", f"{stem}_views.png", f"{stem}_inversion.safetensors"]
            if mesh:
                with console_warnings(stem):
                    write_ply(out / f"{stem}.ply", edited.mesh(resolution=mesh_resolution))
                files.append(f"{stem}.ply")
            if video:
                edited.video(out / f"{stem}_orbit.mp4", frames=frames)
                files.append(f"{stem}_orbit.mp4")
            rows.append({"strength": value, "files": files})
            bar.advance(task)
    save_png(out / "sweep.png", image_grid(sweep))
    summary = {
        "inversion": str(inversion_path),
        "direction": chosen.name,
        "layers": list(span) if span else None,
        "scale": chosen.scale,
        "offsets": offsets,
        "fit_steps": fit_steps,
        "fit_loss": base.fit_loss,
        "views": yaws,
        "edits": rows,
    }
    write_json_atomic(out / "edit.json", summary)  # strict JSON: a NaN fit loss becomes null
    console.print(f"wrote {len(values)} edit(s) along {chosen.name} into [bold]{out}[/]", highlight=False)
