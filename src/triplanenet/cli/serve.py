"""``triplanenet serve``: the web demo (FastAPI + one static page) on a local port."""

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
    console,
    load_cli_model,
    resolve_device,
    user_errors,
)
from triplanenet.errors import ConfigError


@user_errors
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 exposes it to your network).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 7860,
    directions_file: Annotated[
        Path | None,
        typer.Option("--directions", help="Direction bundle from `triplanenet directions` (default: GANSpace now)."),
    ] = None,
    max_sessions: Annotated[int, typer.Option(help="Inversions kept in memory (least recently used dropped).")] = 8,
    max_upload_mb: Annotated[float, typer.Option(help="Largest accepted upload, in MiB.")] = 10.0,
    fit_steps: Annotated[int, typer.Option(help="Adam steps fitting w ∈ W before a session's first edit.")] = 100,
    model_path: ModelOption = None,
    checkpoint: CheckpointOption = None,
    generator: GeneratorOption = None,
    preset: PresetOption = None,
    device: DeviceOption = "auto",
) -> None:
    """Run the web demo: upload a photo, see the reconstruction, novel views, mesh/video downloads and edits.

    Runs on CPU with the bundled model; pass --checkpoint/--generator (official weights) and --device cuda on a GPU.
    Example: triplanenet serve --port 7860, then open http://127.0.0.1:7860
    """
    import uvicorn

    from triplanenet.editing.directions import load_directions
    from triplanenet.web.app import create_app

    if not 0 < port < 65536 or max_sessions < 1 or max_upload_mb <= 0 or fit_steps < 0:
        raise ConfigError("--port must be 1-65535, --max-sessions >= 1, --max-upload-mb > 0 and --fit-steps >= 0")
    torch_device = resolve_device(device)
    model = load_cli_model(model_path, checkpoint, generator, preset, torch_device)
    named = None
    if directions_file is not None:
        named = load_directions(directions_file, model.decoder.config.w_dim, model.decoder.num_ws)
    app = create_app(
        model,
        device=torch_device,
        directions=named,
        max_sessions=max_sessions,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        fit_steps=fit_steps,
        model_name=str(model_path or checkpoint or (f"preset {preset}" if preset else "bundled default")),
    )
    console.print(f"serving the triplanenet demo on [bold]http://{host}:{port}[/] (Ctrl-C to stop)", highlight=False)
    uvicorn.run(app, host=host, port=port, log_level="warning")
