"""``triplanenet`` command-line entry point (typer). Each command lives in its own module."""

from __future__ import annotations

import typer

from triplanenet.cli.convert import convert
from triplanenet.cli.demo import demo
from triplanenet.cli.fetch_weights import fetch_weights
from triplanenet.cli.generate import generate
from triplanenet.cli.invert import invert
from triplanenet.cli.train import train

app = typer.Typer(
    name="triplanenet",
    help="Turn a face photo into an editable 3D head (EG3D + TriPlaneNet), in pure PyTorch.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(demo)
app.command(no_args_is_help=False)(generate)
app.command()(invert)
app.command()(convert)
app.command()(train)
app.command()(fetch_weights)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
