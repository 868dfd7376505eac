"""``triplanenet convert``: official EG3D generators and TriPlaneNet models -> our safe ``.safetensors`` format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from triplanenet.cli.common import console, user_errors


@user_errors
def convert(
    source: Annotated[
        Path,
        typer.Argument(
            help="EG3D generator (NVIDIA .pkl, TriPlaneNet ffhq512-128.pth, .safetensors) or a TriPlaneNet model "
            "(official v1/v2 .pth, a training checkpoint)."
        ),
    ],
    destination: Annotated[Path, typer.Argument(help="Output .safetensors file.")],
    generator: Annotated[
        Path | None,
        typer.Option(help="For official TriPlaneNet v1/v2 checkpoints: the EG3D generator they were trained with."),
    ] = None,
    neural_rendering_resolution: Annotated[
        int | None, typer.Option(help="Override the stored neural rendering resolution (.pth files default to 128).")
    ] = None,
) -> None:
    """Convert an EG3D generator or a TriPlaneNet model to .safetensors + JSON config (nothing is unpickled).

    The source is read without executing any code it contains. A generator becomes its 176 G_ema tensors, latent_avg
    and the architecture; a TriPlaneNet model all its weights, latent_avg and its config (version 1 or 2 and the
    decoder variant are kept). Examples: triplanenet convert ffhq512-128.pkl ffhq512-128.safetensors;
    triplanenet convert triplanenet_v2_final.pth v2.safetensors --generator ffhq512-128.pth
    """
    from triplanenet.io.model_checkpoints import convert_triplanenet, is_triplanenet_file
    from triplanenet.io.registry import default_generator_for, resolve_checkpoint

    if generator is None and default_generator_for(source) is not None:
        generator = Path(default_generator_for(source))  # type: ignore[arg-type]
    source = resolve_checkpoint(source)  # an official name -> its cached download
    if is_triplanenet_file(source):
        model = convert_triplanenet(source, destination, generator)
        console.print(f"wrote [bold]{destination}[/] (TriPlaneNet v{model.version})")
        return
    from triplanenet.io.checkpoints import convert_generator

    convert_generator(source, destination, neural_rendering_resolution)
    console.print(f"wrote [bold]{destination}[/]")
