"""``triplanenet download NAME...``: fetch official checkpoints by name into the cache (``$TRIPLANENET_HOME``)."""

from __future__ import annotations

from typing import Annotated

import typer

from triplanenet.cli.common import console, user_errors
from triplanenet.errors import TriplaneNetError


def _size(value: int | None) -> str:
    if value is None:
        return "unknown"
    return f"{value / 1e6:,.1f} MB"


def _print_list() -> None:
    from triplanenet.io.registry import REGISTRY

    rows = [("NAME", "KIND", "FILE", "LICENCE", "CACHED")]
    for entry in REGISTRY.values():
        cached = "yes" if entry.path().is_file() else "no"
        licence = "NVIDIA non-commercial" if entry.license.requires_acceptance else entry.license.name.split(" (")[0]
        rows.append((entry.name, entry.kind, entry.filename, licence, cached))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    from triplanenet.io.registry import cache_home

    typer.echo(f"cache: {cache_home()} ($TRIPLANENET_HOME)")


def _print_plan(name: str) -> None:
    from triplanenet.io.download import license_accepted, recorded_hash
    from triplanenet.io.registry import get_entry

    entry = get_entry(name)
    target = entry.path()
    if target.is_file():
        typer.echo(f"{entry.name}: already downloaded: {target}")
        return
    part = target.with_name(target.name + ".part")
    resume = f" (resuming {part.stat().st_size:,} bytes already in {part.name})" if part.is_file() else ""
    typer.echo(f"{entry.name}: would download {entry.url}")
    typer.echo(f"  -> {target}{resume}")
    record = recorded_hash(entry.name)
    if entry.sha256:
        check = f"size {_size(entry.size)}, sha256 {entry.sha256}"
    elif record:
        check = f"sha256 recorded at the first download: {record.get('sha256')} ({record.get('recorded_at', '?')})"
    else:
        check = "size and sha256 unknown: the sha256 is recorded at the first download and checked afterwards"
    typer.echo(f"  check: {check}")
    gate = ""
    if entry.license.requires_acceptance:
        gate = " [accepted]" if license_accepted(entry.license) else " [must be accepted: --accept-license or prompt]"
    typer.echo(f"  licence: {entry.license.name} ({entry.license.url}): {entry.license.summary}{gate}")


@user_errors
def download(
    names: Annotated[
        list[str] | None, typer.Argument(help="Checkpoint names, e.g. triplanenet-v2 triplanenet-ffhq512-128-pth.")
    ] = None,
    list_names: Annotated[
        bool, typer.Option("--list", help="List the known names and whether they are cached.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be fetched, from where, to where; download nothing.")
    ] = False,
    accept_license: Annotated[
        bool,
        typer.Option(
            "--accept-license", help="Accept the licences that need it (NVIDIA's EG3D licence), once, without a prompt."
        ),
    ] = False,
    force: Annotated[bool, typer.Option(help="Download again even if the file is cached.")] = False,
    verify: Annotated[
        bool, typer.Option(help="Re-hash files already cached against the known or recorded sha256.")
    ] = False,
) -> None:
    """Download official checkpoints by name (resumable, verified, cached in $TRIPLANENET_HOME).

    Then use the name wherever a path goes, e.g. --checkpoint triplanenet-v2 (its generator is found by name too).
    Example: triplanenet download triplanenet-v2 triplanenet-ffhq512-128-pth --accept-license
    """
    from triplanenet.io.download import download_with_progress, verify_cached
    from triplanenet.io.registry import get_entry

    if list_names:
        _print_list()
        if not names:
            return
    if not names:
        raise TriplaneNetError("name the checkpoints to download (see `triplanenet download --list`)")
    entries = [get_entry(name) for name in dict.fromkeys(names)]
    if dry_run:
        for entry in entries:
            _print_plan(entry.name)
        return
    failures = 0
    for entry in entries:
        target = entry.path()
        try:
            if target.is_file() and not force:
                if verify:
                    digest = verify_cached(entry)
                    console.print(f"{entry.name}: verified {target} (sha256 {digest[:16]}...)", highlight=False)
                else:
                    console.print(f"{entry.name}: already downloaded: [bold]{target}[/]", highlight=False)
                continue
            path = download_with_progress(entry, force=force, accept_license=accept_license)
            console.print(f"{entry.name}: saved [bold]{path}[/] ({path.stat().st_size:,} bytes)", highlight=False)
        except TriplaneNetError as exc:
            failures += 1
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    if failures:
        raise typer.Exit(code=1)
