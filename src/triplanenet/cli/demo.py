"""``triplanenet demo``: the whole system on the bundled default model, in under a minute on a CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from triplanenet.cli.common import console, output_folder, resolve_device, user_errors


@user_errors
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("outputs/demo"),
    heads: Annotated[int, typer.Option(help="Held-out procedural heads to invert.")] = 4,
    device: Annotated[str, typer.Option(help="cpu | cuda | auto")] = "auto",
    model: Annotated[
        Path | None, typer.Option(help="Evaluate another TriPlaneNet (ours .safetensors / training .pt) instead.")
    ] = None,
) -> None:
    """Invert held-out procedural heads with the bundled model and compare with their ground truth."""
    output_folder(out)
    from triplanenet.demo import metrics_markdown, run_demo
    from triplanenet.errors import TriplaneNetError

    if heads < 1:
        raise TriplaneNetError("--heads must be at least 1")
    result = run_demo(out, heads=heads, device=resolve_device(device), model_path=model)
    console.print(metrics_markdown(result.table), highlight=False)
    console.print(
        f"wrote reconstructions, novel views, depth, a mesh and an orbit video to [bold]{result.out}[/] "
        f"in {result.seconds:.1f} s"
    )
    console.print(
        "Your own photo (face found, aligned and posed automatically) with the official TriPlaneNet v2 weights: "
        "triplanenet download triplanenet-v2 triplanenet-ffhq512-128-pth --accept-license, then "
        "triplanenet invert photo.jpg --checkpoint triplanenet-v2 --mesh --video"
    )
