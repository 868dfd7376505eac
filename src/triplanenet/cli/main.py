"""``triplanenet`` command-line entry point (typer). Each command lives in its own module."""

from __future__ import annotations

import typer

from triplanenet.cli.bench import bench
from triplanenet.cli.conf_maps import conf_maps
from triplanenet.cli.convert import convert
from triplanenet.cli.demo import demo
from triplanenet.cli.download import download
from triplanenet.cli.edit import directions, edit
from triplanenet.cli.eval import ablate, eval_command
from triplanenet.cli.fetch_weights import fetch_weights
from triplanenet.cli.generate import generate
from triplanenet.cli.invert import invert
from triplanenet.cli.invert_video import invert_video
from triplanenet.cli.preprocess import preprocess
from triplanenet.cli.serve import serve
from triplanenet.cli.train import train

app = typer.Typer(
    name="triplanenet",
    help="Turn a face photo into an editable 3D head (EG3D + TriPlaneNet), in pure PyTorch.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _startup(
    download: bool = typer.Option(
        False,
        "--download",
        help="Let the command download the official checkpoints it is given by name (e.g. --checkpoint "
        "triplanenet-v2) when they are not cached yet; same as `triplanenet download NAME` first.",
    ),
) -> None:
    """Process-wide settings before any command runs (also when ``app`` is the console-script entry point)."""
    import os

    if download:
        from triplanenet.io.registry import DOWNLOAD_ENV

        os.environ[DOWNLOAD_ENV] = "1"
    if os.environ.get("TRIPLANENET_MALLOC_TUNING", "1") != "0":
        from triplanenet.perf import tune_cpu_allocator

        tune_cpu_allocator()


app.command()(demo)
app.command(no_args_is_help=False)(generate)
app.command()(invert)
app.command()(convert)
app.command()(train)
app.command()(fetch_weights)
app.command(no_args_is_help=False)(download)
app.command(name="eval")(eval_command)
app.command()(ablate)
app.command()(directions)
app.command()(edit)
app.command()(serve)
app.command()(preprocess)
app.command(name="invert-video")(invert_video)
app.command(name="conf-maps")(conf_maps)
app.command()(bench)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
