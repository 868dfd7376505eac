"""The web demo's HTTP API, through FastAPI's TestClient (no network)."""

from __future__ import annotations

import asyncio
import io
import json
import struct
import threading
import time
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from triplanenet.io.mesh import read_ply_counts
from triplanenet.web.app import create_app

with warnings.catch_warnings():  # starlette warns that its TestClient will move from httpx to httpx2
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app(max_sessions=2, max_upload_bytes=200_000, fit_steps=5, examples=1))


def _png(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)))


def _invert_example(client: TestClient) -> str:
    response = client.post("/api/invert", data={"example": "head0"})
    assert response.status_code == 200, response.text
    return response.json()["session"]


def test_page_and_info(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and 'id="yaw"' in page.text
    assert "http://" not in page.text and "https://" not in page.text, "the page must not load anything remote"
    info = client.get("/api/info").json()
    assert info["examples"] == ["head0"] and "pc0" in info["directions"]
    examples = client.get("/api/examples").json()
    assert examples == [{"name": "head0", "url": "/api/examples/head0.png"}]
    assert _png(client.get("/api/examples/head0.png")).shape == (128, 128, 3)


def test_invert_render_mesh_video_and_edit(client: TestClient, tmp_path) -> None:
    session = _invert_example(client)
    recon = _png(client.get("/api/render", params={"session": session}))
    assert recon.shape == (128, 128, 3) and recon.std() > 5
    left = _png(client.get("/api/render", params={"session": session, "yaw": -0.5, "pitch": 0.0}))
    right = _png(client.get("/api/render", params={"session": session, "yaw": 0.5, "pitch": 0.1}))
    assert np.abs(left.astype(int) - right.astype(int)).mean() > 2
    mesh = client.get("/api/mesh", params={"session": session, "resolution": 32})
    assert mesh.status_code == 200 and mesh.content.startswith(b"ply\n")
    assert "head.ply" in mesh.headers["content-disposition"]
    ply = tmp_path / "head.ply"
    ply.write_bytes(mesh.content)
    vertices, faces = read_ply_counts(ply)
    assert vertices > 50 and faces > 50
    video = client.get("/api/video", params={"session": session, "frames": 4})
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert b"ftyp" in video.content[:64]

    edit = client.post("/api/edit", json={"session": session, "direction": "pc0", "strength": 3.0})
    assert edit.status_code == 200, edit.text
    assert edit.json()["edit"]["direction"] == "pc0"
    edited = _png(client.get("/api/render", params={"session": session}))
    assert np.abs(edited.astype(int) - recon.astype(int)).mean() > 1
    reset = client.post("/api/edit", json={"session": session, "direction": "pc0", "strength": 0})
    assert reset.status_code == 200 and reset.json()["edit"] is None
    assert np.array_equal(_png(client.get("/api/render", params={"session": session})), recon)
    layered = client.post("/api/edit", json={"session": session, "direction": "pc1", "strength": -2, "layers": [0, 4]})
    assert layered.status_code == 200, layered.text


def test_upload_of_an_aligned_crop(client: TestClient, tmp_path) -> None:
    example = client.get("/api/examples/head0.png").content
    response = client.post("/api/invert", files={"file": ("face.png", example, "image/png")}, data={"crop": "aligned"})
    assert response.status_code == 200, response.text
    assert response.json()["camera"] == "aligned crop, frontal camera"
    assert _png(client.get(response.json()["render"])).shape == (128, 128, 3)


def test_sessions_are_capped(client: TestClient) -> None:
    first = _invert_example(client)
    for _ in range(2):
        _invert_example(client)
    response = client.get("/api/render", params={"session": first})
    assert response.status_code == 404 and "session" in response.json()["error"]


def _error(response, status: int = 400) -> str:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert isinstance(message, str) and "\n" not in message and message
    return message


def test_bad_requests_get_one_line_json_errors(client: TestClient) -> None:
    assert "not a readable image" in _error(
        client.post("/api/invert", files={"file": ("x.png", b"this is not an image", "image/png")})
    )
    assert "empty" in _error(client.post("/api/invert", files={"file": ("x.png", b"", "image/png")}))
    big = client.post("/api/invert", files={"file": ("x.png", b"\0" * 300_000, "image/png")})
    assert "larger than" in _error(big, 413)
    tiny = io.BytesIO()
    Image.new("RGB", (8, 8)).save(tiny, format="PNG")
    assert "16 and" in _error(client.post("/api/invert", files={"file": ("x.png", tiny.getvalue(), "image/png")}))
    wide = io.BytesIO()
    Image.new("RGB", (64, 32)).save(wide, format="PNG")
    message = _error(
        client.post("/api/invert", files={"file": ("x.png", wide.getvalue(), "image/png")}, data={"crop": "aligned"})
    )
    assert "not a square" in message
    assert "exactly one" in _error(client.post("/api/invert", data={}))
    assert "unknown example" in _error(client.post("/api/invert", data={"example": "nobody"}))
    assert "crop mode" in _error(client.post("/api/invert", data={"example": "head0", "crop": "zoom"}))
    session = _invert_example(client)
    assert "yaw" in _error(client.get("/api/render", params={"session": session, "yaw": 9}))
    assert "yaw" in _error(client.get("/api/render", params={"session": session, "yaw": "left"}))
    assert "unknown direction" in _error(
        client.post("/api/edit", json={"session": session, "direction": "smile", "strength": 1})
    )
    assert "strength" in _error(client.post("/api/edit", json={"session": session, "direction": "pc0", "strength": 99}))
    assert "layer range" in _error(
        client.post("/api/edit", json={"session": session, "direction": "pc0", "strength": 1, "layers": [5, 50]})
    )
    assert "session" in _error(client.get("/api/mesh", params={"session": "nope"}), 404)
    assert "resolution" in _error(client.get("/api/mesh", params={"session": session, "resolution": 4}))


def test_photo_without_a_face_gets_a_clear_message(client: TestClient) -> None:
    noise = np.random.default_rng(0).integers(0, 255, size=(96, 160, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG")
    message = _error(client.post("/api/invert", files={"file": ("wall.jpg", buffer.getvalue(), "image/jpeg")}))
    assert "face" in message and "aligned square" in message


def test_real_photo_goes_through_face_detection(client: TestClient) -> None:
    skimage_data = pytest.importorskip("skimage.data")
    buffer = io.BytesIO()
    Image.fromarray(skimage_data.astronaut()).save(buffer, format="JPEG")
    response = client.post(
        "/api/invert", files={"file": ("astronaut.jpg", buffer.getvalue(), "image/jpeg")}, data={"crop": "detect"}
    )
    if response.status_code == 400 and "unavailable" in response.json()["error"]:
        pytest.skip(response.json()["error"])
    assert response.status_code == 200, response.text
    assert response.json()["camera"] == "detected face, estimated camera"
    assert _png(client.get(response.json()["render"])).shape == (128, 128, 3)


def test_serve_command_checks_its_options() -> None:
    from typer.testing import CliRunner

    from triplanenet.cli.main import app

    result = CliRunner().invoke(app, ["serve", "--port", "70000"])
    assert result.exit_code == 1 and "--port must be 1-65535" in result.output
    assert "serve" in CliRunner().invoke(app, ["--help"]).output


# ------------------------------------------------------------------------------------------------------------------
# Reliability (issue 21): bounded bodies, header-only pixel checks, model work off the event loop, no API docs


def test_openapi_and_docs_pages_are_hidden(client: TestClient) -> None:
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert client.get(path).status_code == 404, path


def test_oversized_streamed_body_is_refused_before_it_is_read_whole(client: TestClient) -> None:
    """Drive the app at the ASGI level with a chunked body (no Content-Length) of 64 x 16 KiB: the 413 comes after
    about the limit (200 KB + multipart allowance), not after the whole 1 MiB."""
    pulled: list[int] = []
    sent: list[dict] = []

    head = b'--x\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\nContent-Type: image/png\r\n\r\n'

    async def receive() -> dict:
        pulled.append(1)
        body = head if len(pulled) == 1 else b"\0" * 16_384
        return {"type": "http.request", "body": body, "more_body": len(pulled) < 64}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/invert",
        "raw_path": b"/api/invert",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"multipart/form-data; boundary=x"), (b"transfer-encoding", b"chunked")],
        "client": ("test", 1),
        "server": ("test", 80),
        "state": {},
    }
    asyncio.run(client.app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert start["status"] == 413 and "larger than" in json.loads(body)["error"]
    assert len(pulled) <= (200_000 + 64 * 1024) // 16_384 + 2 < 64


def test_content_length_over_the_limit_is_refused_up_front(client: TestClient) -> None:
    response = client.post("/api/invert", content=b"\0" * 400_000, headers={"content-type": "application/octet-stream"})
    assert "larger than" in _error(response, 413)


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def test_png_header_with_too_many_pixels_is_a_400(client: TestClient) -> None:
    for side in (100_000, 20_000, 5_000):  # beyond PIL's bomb limit, above it, and only over our side limit
        response = client.post("/api/invert", files={"file": ("x.png", _png_header(side, side), "image/png")})
        message = _error(response, 400)
        assert "px per side" in message, message


def test_info_answers_while_an_inversion_holds_the_model(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from triplanenet.inverters.encoder import TriPlaneNetInverter

    original = TriPlaneNetInverter.invert_and_render
    started = threading.Event()

    def slow(self, *args, **kwargs):
        started.set()
        time.sleep(1.0)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TriPlaneNetInverter, "invert_and_render", slow)
    with TestClient(client.app) as shared:  # one event loop for both requests
        results: list[int] = []
        worker = threading.Thread(
            target=lambda: results.append(shared.post("/api/invert", data={"example": "head0"}).status_code)
        )
        worker.start()
        assert started.wait(10)
        begin = time.perf_counter()
        info = shared.get("/api/info")
        took = time.perf_counter() - begin
        worker.join(30)
    assert info.status_code == 200 and results == [200]
    assert took < 0.5, f"/api/info waited {took:.2f} s for the inversion"
