"""Shared CLI plumbing: one-line errors, device selection, list parsing, progress bars."""

from __future__ import annotations

import contextlib
import functools
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from triplanenet.errors import TriplaneNetError

console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` in one line and return the exit to raise."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


def user_errors(func: F) -> F:
    """Turn our user-facing exceptions into one-line messages and Ctrl-C into a clean exit (code 130)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except TriplaneNetError as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]: finished files are kept; nothing half-written was left behind")
            raise typer.Exit(code=130) from None
        except torch.cuda.OutOfMemoryError:
            raise fail("the GPU ran out of memory: use a smaller --batch-size or --device cpu") from None

    return wrapper  # type: ignore[return-value]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available else cpu; validates explicit choices."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TriplaneNetError(f"unknown device {name!r}: use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TriplaneNetError("--device cuda was requested but no CUDA GPU is available: use --device cpu")
    return device


def parse_int_ranges(text: str, what: str = "seeds") -> list[int]:
    """``"0-3,7"`` -> [0, 1, 2, 3, 7] (non-negative integers)."""
    values: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            start_text, _, end_text = part.partition("-")
            start = int(start_text)
            end = int(end_text) if end_text else start
            if start < 0 or end < start:
                raise ValueError
            values.extend(range(start, end + 1))
    except ValueError:
        raise TriplaneNetError(f"cannot parse {what} {text!r}: use non-negative numbers like 0-3,7") from None
    if not values:
        raise TriplaneNetError(f"no {what} given")
    return values


def parse_floats(text: str, what: str) -> list[float]:
    """``"-0.4,0,0.4"`` -> [-0.4, 0.0, 0.4]."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise TriplaneNetError(f"cannot parse {what} {text!r}: use comma-separated numbers like -0.4,0,0.4") from None
    if not values:
        raise TriplaneNetError(f"no {what} given")
    return values


def progress() -> Progress:
    """A rich progress bar on stderr (quiet when stderr is not a terminal)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not sys.stderr.isatty(),
    )


@contextlib.contextmanager
def console_warnings(prefix: str) -> Iterator[None]:
    """Show Python warnings raised inside the block as one-line ``warning: prefix: message`` console lines."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for warning in caught:
        console.print(f"[yellow]warning:[/] {prefix}: {warning.message}", highlight=False)
