"""The web demo's HTTP API, through FastAPI's TestClient (no network)."""

from __future__ import annotations

import io
import warnings

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
