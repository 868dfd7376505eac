"""``triplanenet convert``: official EG3D checkpoints -> our safe ``.safetensors`` format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from triplanenet.cli.common import console, user_errors


@user_errors
def convert(
    source: Annotated[Path, typer.Argument(help="NVIDIA .pkl, TriPlaneNet .pth or our .safetensors generator.")],
    destination: Annotated[Path, typer.Argument(help="Output .safetensors file.")],
    neural_rendering_resolution: Annotated[
        int | None, typer.Option(help="Override the stored neural rendering resolution (.pth files default to 128).")
    ] = None,
) -> None:
    """Convert an EG3D generator checkpoint to .safetensors + JSON config (loads without unpickling anything).

    The source is read without executing any code it contains; the result holds the 176 G_ema tensors, latent_avg
    and the architecture. Example: triplanenet convert ffhq512-128.pkl ffhq512-128.safetensors
    """
    from triplanenet.io.checkpoints import convert_generator

    convert_generator(source, destination, neural_rendering_resolution)
    console.print(f"wrote [bold]{destination}[/]")
