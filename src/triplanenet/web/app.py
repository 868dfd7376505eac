"""The web demo: a small FastAPI app and one static page (no CDN, everything served from here).

Endpoints (errors are ``{"error": "one line"}`` with status 400, 404 or 413):

* ``GET /`` — the page; ``GET /api/info`` — model, directions and examples.
* ``GET /api/examples`` — shipped examples (held-out procedural heads rendered at start-up);
  ``GET /api/examples/{name}.png`` — one example image.
* ``POST /api/invert`` — multipart ``file`` (a photo) or form field ``example``; ``crop`` = ``auto`` (square images
  are aligned crops with a frontal camera, others go through face detection and alignment), ``aligned`` or
  ``detect``. Returns ``{"session": id, ...}``.
* ``GET /api/render?session=&yaw=&pitch=`` — PNG (no yaw/pitch: the input camera; else yaw/pitch offsets from
  frontal in radians). ``GET /api/mesh?session=`` — PLY; ``GET /api/video?session=`` — MP4.
* ``POST /api/edit`` — JSON ``{"session", "direction", "strength", "layers": [start, stop] | null}``; later
  renders, meshes and videos show the edit (strength 0 restores the reconstruction).

Sessions live in memory, least recently used first out beyond ``max_sessions``. One lock serialises model work.
"""

from __future__ import annotations

import io
import math
import tempfile
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from triplanenet.errors import CheckpointError, InputImageError, TriplaneNetError

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_IMAGE_SIDE = 4096
EXAMPLE_SEED = 900_100  # held-out identities (the training worlds use seeds 0 and 1)


class WebError(Exception):
    """A request problem answered as ``{"error": message}`` with ``status``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


MULTIPART_OVERHEAD = 64 * 1024
"""Bytes a request body may have beyond the largest upload: the multipart boundaries and form fields."""


class BodySizeLimit:
    """ASGI middleware: a request body over ``limit`` bytes is answered 413 with a one-line JSON error, from the
    ``Content-Length`` header before anything is read, or as soon as the streamed body passes the limit (chunked
    uploads), so an oversized upload is never spooled whole."""

    def __init__(self, app: ASGIApp, limit: int, message: str) -> None:
        self.app = app
        self.limit = limit
        self.message = message

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None:
            text = length.decode("latin-1").strip()
            if not text.isdigit() or len(text) > 18:
                await JSONResponse({"error": "bad Content-Length header"}, status_code=400)(scope, receive, send)
                return
            if int(text) > self.limit:
                await self._too_large(scope, receive, send)
                return
        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:  # the app's answer to the interrupted body (FastAPI: 400) is replaced by the 413
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _BodyTooLarge:
            pass
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse({"error": self.message}, status_code=413, headers={"Connection": "close"})
        await response(scope, receive, send)


class _BodyTooLarge(Exception):
    """Raised inside the app's ``receive`` when the streamed body passes the limit."""


class EditRequest(BaseModel):
    session: str
    direction: str
    strength: float
    layers: list[int] | None = None


@dataclass
class Session:
    inversion: Any
    image: torch.Tensor
    current: Any
    base: Any = None
    edit: dict[str, Any] | None = None
    renders: dict[tuple[float, float] | None, bytes] = field(default_factory=dict)


@dataclass
class Example:
    name: str
    png: bytes
    image: torch.Tensor
    camera: torch.Tensor


def _png(image: torch.Tensor) -> bytes:
    from PIL import Image

    from triplanenet.io.images import tensor_to_uint8

    buffer = io.BytesIO()
    Image.fromarray(tensor_to_uint8(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def _decode_upload(data: bytes) -> torch.Tensor:
    """Upload bytes -> (3, H, W) float32 in [-1, 1]; InputImageError when not a usable image."""
    from PIL import Image, UnidentifiedImageError

    from triplanenet.io.images import load_image

    if not data:
        raise InputImageError("the upload is empty: choose a PNG or JPEG photo")
    try:
        with Image.open(io.BytesIO(data)) as handle:
            width, height = handle.size
    except Image.DecompressionBombError:
        raise InputImageError(
            f"the image header declares too many pixels: use one between 16 and {MAX_IMAGE_SIDE} px per side"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise InputImageError("the upload is not a readable image: use a PNG or JPEG photo") from None
    if max(width, height) > MAX_IMAGE_SIDE or min(width, height) < 16:
        raise InputImageError(f"the image is {width}x{height}: use one between 16 and {MAX_IMAGE_SIDE} px per side")
    try:
        return load_image(io.BytesIO(data))
    except InputImageError:
        raise InputImageError("the upload is not a readable image: use a PNG or JPEG photo") from None


def _to_uint8_array(image: torch.Tensor) -> np.ndarray:
    from triplanenet.io.images import tensor_to_uint8

    return tensor_to_uint8(image)


def create_app(
    model=None,
    device: str | torch.device = "cpu",
    directions: dict[str, Any] | None = None,
    max_sessions: int = 8,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    fit_steps: int = 100,
    examples: int = 2,
    model_name: str | None = None,
) -> FastAPI:
    """Build the demo app around a TriPlaneNet ``model`` (default: the bundled CPU model).

    Args:
        directions: named directions (default: GANSpace of the model's generator, 10 components).
        max_sessions: inversions kept in memory (least recently used dropped first).
        max_upload_bytes: largest accepted upload.
        fit_steps: Adam steps fitting ``w ∈ W`` before the first edit of a session.
        examples: number of shipped example heads rendered at start-up.
        model_name: how ``/api/info`` names the model.
    """
    from triplanenet.editing.directions import compute_ganspace
    from triplanenet.eg3d.camera import camera_label
    from triplanenet.inverters.encoder import TriPlaneNetInverter
    from triplanenet.synth.params import HeadParams
    from triplanenet.synth.render import render_heads
    from triplanenet.views import default_label

    torch_device = torch.device(device)
    if model is None:
        model_name = model_name or "bundled default (procedural heads)"
        from triplanenet.demo import load_default_model

        model = load_default_model(torch_device)
    model = model.to(torch_device).eval()
    generator = model.decoder
    inverter = TriPlaneNetInverter(model)
    rendering = generator.config.rendering
    named = directions if directions is not None else compute_ganspace(generator).directions()
    lock = threading.Lock()
    sessions: OrderedDict[str, Session] = OrderedDict()

    side = min(generator.config.img_resolution, 256)
    shipped: dict[str, Example] = {}
    if examples > 0:
        yaws = torch.tensor([0.0, 0.3, -0.25, 0.15][:examples] + [0.0] * max(0, examples - 4))
        pitches = torch.tensor([0.0, -0.05, 0.05, 0.0][:examples] + [0.0] * max(0, examples - 4))
        cameras = camera_label(yaws, pitches, radius=rendering.avg_camera_radius, pivot=rendering.avg_camera_pivot)
        heads = HeadParams.sample(torch.Generator().manual_seed(EXAMPLE_SEED), examples)
        truth = render_heads(heads, cameras, resolution=side)
        for index in range(examples):
            name = f"head{index}"
            shipped[name] = Example(
                name, _png(truth.image[index]), truth.image[index].clone(), cameras[index : index + 1]
            )

    # No /openapi.json or docs pages: the demo's API is not a public one.
    app = FastAPI(title="triplanenet demo", openapi_url=None, docs_url=None, redoc_url=None)
    too_large = f"the upload is larger than {max_upload_bytes // (1024 * 1024)} MiB"
    if max_upload_bytes < 1024 * 1024:
        too_large = f"the upload is larger than {max_upload_bytes} bytes"
    app.add_middleware(BodySizeLimit, limit=max_upload_bytes + MULTIPART_OVERHEAD, message=too_large)
    app.state.model = model
    app.state.sessions = sessions

    @app.exception_handler(WebError)
    async def _web_error(_: Request, exc: WebError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(TriplaneNetError)
    async def _user_error(_: Request, exc: TriplaneNetError) -> JSONResponse:
        return JSONResponse({"error": str(exc).splitlines()[0]}, status_code=400)

    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ())[1:]) or 'request'}: {err.get('msg', 'invalid')}"
            for err in exc.errors()
        )
        return JSONResponse({"error": f"bad request ({problems})"}, status_code=400)

    def session_for(key: str) -> Session:
        found = sessions.get(key)
        if found is None:
            raise WebError("unknown or expired session: invert the photo again", status=404)
        sessions.move_to_end(key)
        return found

    def add_session(session: Session) -> str:
        key = uuid.uuid4().hex
        sessions[key] = session
        while len(sessions) > max(1, max_sessions):
            sessions.popitem(last=False)
        return key

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        page = resources.files("triplanenet.web") / "static" / "index.html"
        return HTMLResponse(page.read_text(encoding="utf-8"))

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return {
            "model": model_name or "custom",
            "resolution": generator.config.img_resolution,
            "device": str(torch_device),
            "directions": list(named),
            "examples": list(shipped),
        }

    @app.get("/api/examples")
    def list_examples() -> list[dict[str, str]]:
        return [{"name": name, "url": f"/api/examples/{name}.png"} for name in shipped]

    @app.get("/api/examples/{name}.png")
    def example_png(name: str) -> Response:
        if name not in shipped:
            raise WebError(f"unknown example {name!r}: choose one of {', '.join(shipped) or 'none'}", status=404)
        return Response(shipped[name].png, media_type="image/png")

    @app.get("/api/directions")
    def list_directions() -> list[dict[str, Any]]:
        return [{"name": name, "layers": d.layers, "scale": d.scale} for name, d in named.items()]

    @app.post("/api/invert")
    async def invert(
        file: UploadFile | None = File(default=None),
        example: str | None = Form(default=None),
        crop: str = Form(default="auto"),
    ) -> dict[str, Any]:
        if crop not in ("auto", "aligned", "detect"):
            raise WebError(f"unknown crop mode {crop!r}: use auto, aligned or detect")
        if (file is None) == (example is None or example == ""):
            raise WebError("send exactly one of: a photo in 'file' or an example name in 'example'")
        if example:
            if example not in shipped:
                raise WebError(f"unknown example {example!r}: choose one of {', '.join(shipped) or 'none'}")
            chosen = shipped[example]
            image, camera, how = chosen.image, chosen.camera, "example (true camera)"
        else:
            if file is None:
                raise WebError("send a photo in 'file'")
            data = await file.read(max_upload_bytes + 1)
            if len(data) > max_upload_bytes:
                raise WebError(too_large, status=413)
            image, camera, how = await run_in_threadpool(decode_and_prepare, data, crop)
        # Model work runs in a worker thread, so the event loop (and /api/info) keeps answering meanwhile.
        key = await run_in_threadpool(invert_locked, image, camera)
        return {
            "session": key,
            "camera": how,
            "render": f"/api/render?session={key}",
            "directions": list(named),
        }

    def invert_locked(image: torch.Tensor, camera: torch.Tensor) -> str:
        with lock:
            # The forward pass already rendered the reconstruction at the input camera: keep it as the session's
            # first render (at batch 1 it is bit-identical to rendering the inversion again).
            batch = inverter.invert_and_render(image.unsqueeze(0), camera.reshape(1, 25))
            inversion = batch.inversions[0]
            session = Session(inversion=inversion, image=image, current=inversion)
            session.renders[None] = _png(batch.image[0])
            return add_session(session)

    def decode_and_prepare(data: bytes, crop: str) -> tuple[torch.Tensor, torch.Tensor, str]:
        return prepare_upload(_decode_upload(data), crop)

    app.state.invert_locked = invert_locked

    def prepare_upload(image: torch.Tensor, crop: str) -> tuple[torch.Tensor, torch.Tensor, str]:
        height, width = image.shape[-2:]
        square = abs(height - width) <= 0.02 * max(height, width)
        if crop == "aligned" or (crop == "auto" and square):
            if not square:
                raise WebError(f"the image is {width}x{height}, not a square aligned crop: use crop=detect")
            return image, default_label(generator), "aligned crop, frontal camera"
        from triplanenet.preprocess import preprocess_face

        try:
            with lock:
                result = preprocess_face(_to_uint8_array(image), what="the photo")
        except CheckpointError as exc:
            raise WebError(f"face detection is unavailable ({exc}); upload an aligned square crop instead") from None
        except InputImageError as exc:
            raise WebError(f"{exc}; or upload an aligned square face crop") from None
        return result.image_tensor(), result.label.reshape(1, 25), "detected face, estimated camera"

    @app.get("/api/render")
    def render(session: str, yaw: float | None = None, pitch: float | None = None) -> Response:
        if yaw is not None and not (math.isfinite(yaw) and abs(yaw) <= 1.5):
            raise WebError("yaw must be between -1.5 and 1.5 radians")
        if pitch is not None and not (math.isfinite(pitch) and abs(pitch) <= 0.8):
            raise WebError("pitch must be between -0.8 and 0.8 radians")
        with lock:
            state = session_for(session)
            key = None if yaw is None and pitch is None else (round(yaw or 0.0, 4), round(pitch or 0.0, 4))
            cached = state.renders.get(key)
            if cached is None:
                if key is None:
                    image = state.current.render().image[0]
                else:
                    image = state.current.novel_views([key[0]], pitch=key[1])[0]
                cached = _png(image)
                if len(state.renders) > 64:
                    state.renders.clear()
                state.renders[key] = cached
        return Response(cached, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.get("/api/mesh")
    def mesh(session: str, resolution: int = 64) -> Response:
        from triplanenet.io.mesh import write_ply

        if not 16 <= resolution <= 256:
            raise WebError("mesh resolution must be between 16 and 256")
        with lock:
            state = session_for(session)
            shape = state.current.mesh(resolution=resolution, level=None)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "head.ply"
            write_ply(path, shape)
            data = path.read_bytes()
        headers = {"Content-Disposition": 'attachment; filename="head.ply"'}
        return Response(data, media_type="application/octet-stream", headers=headers)

    @app.get("/api/video")
    def video(session: str, frames: int = 24) -> Response:
        if not 2 <= frames <= 240:
            raise WebError("frames must be between 2 and 240")
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "orbit.mp4"
            with lock:
                state = session_for(session)
                state.current.video(path, frames=frames, fps=24)
            data = path.read_bytes()
        headers = {"Content-Disposition": 'attachment; filename="orbit.mp4"'}
        return Response(data, media_type="video/mp4", headers=headers)

    @app.post("/api/edit")
    def edit(request: EditRequest) -> dict[str, Any]:
        from triplanenet.editing.directions import check_layers
        from triplanenet.editing.edit import edited_inversion, make_edit_base

        if request.direction not in named:
            raise WebError(f"unknown direction {request.direction!r}: choose one of {', '.join(named)}")
        if not (math.isfinite(request.strength) and abs(request.strength) <= 10):
            raise WebError("strength must be between -10 and 10")
        with lock:
            state = session_for(request.session)
            layers = None
            if request.layers is not None:
                layers = check_layers(tuple(request.layers), generator.num_ws)  # type: ignore[arg-type]
            if request.strength == 0:
                state.current, state.edit = state.inversion, None
            else:
                if state.base is None:
                    state.base = make_edit_base(state.inversion, steps=fit_steps)
                direction = named[request.direction]
                state.current = edited_inversion(state.base, direction, request.strength, layers)
                state.edit = {"direction": request.direction, "strength": request.strength, "layers": layers}
            state.renders.clear()
            fit_loss = None if state.base is None else state.base.fit_loss
        return {
            "session": request.session,
            "edit": state.edit,
            "fit_loss": fit_loss,
            "render": f"/api/render?session={request.session}",
        }

    return app
