"""Official checkpoints by name, offline: a local HTTP server (127.0.0.1, started here) stands in for NVIDIA's NGC
catalogue and Google Drive through the documented ``$TRIPLANENET_NGC_URL`` / ``$TRIPLANENET_GDRIVE_URL`` overrides;
``$TRIPLANENET_HOME`` points the cache at a temporary folder."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.cookiejar import Cookie, CookieJar
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from triplanenet.cli.main import app
from triplanenet.eg3d.camera import camera_label
from triplanenet.eg3d.config import GeneratorConfig
from triplanenet.eg3d.generator import TriPlaneGenerator
from triplanenet.errors import CheckpointError
from triplanenet.io.cameras import write_dataset_json
from triplanenet.io.download import (
    DownloadError,
    LicenseNotAccepted,
    accept_license,
    confirmation_url,
    download_entry,
    license_accepted,
    recorded_hash,
)
from triplanenet.io.registry import (
    DOWNLOAD_ENV,
    GDRIVE_URL_ENV,
    NGC_URL_ENV,
    NVIDIA_EG3D_LICENSE,
    REGISTRY,
    get_entry,
    resolve_checkpoint,
)

runner = CliRunner()


# ------------------------------------------------------------------------------------------------------------
# A tiny NGC + Google Drive stand-in


@dataclass
class FakeServer:
    """Serves ``ngc[name]`` at ``/ngc/<name>`` and ``drive[id]`` behind a Drive-style confirmation page at
    ``/uc?export=download&id=<id>`` -> ``/download?id=<id>&export=download&confirm=t&uuid=...``. Range requests get
    206 answers. ``drop_once`` paths send half the body and close the connection the first time."""

    ngc: dict[str, bytes] = field(default_factory=dict)
    drive: dict[str, bytes] = field(default_factory=dict)
    drop_once: set[str] = field(default_factory=set)
    ignore_range: bool = False
    drive_style: str = "form"  # form | link | quota
    log: list[tuple[str, str | None]] = field(default_factory=list)
    port: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _handler(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def _serve_file(self, data: bytes) -> None:
            wanted = self.headers.get("Range")
            start = 0
            if wanted and not server.ignore_range:
                start = int(wanted.removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    self._send(416, b"", "text/plain", {"Content-Range": f"bytes */{len(data)}"})
                    return
            body = data[start:]
            self.send_response(206 if start else 200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if self.path in server.drop_once:
                server.drop_once.discard(self.path)
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body)

        def do_GET(self) -> None:
            server.log.append((self.path, self.headers.get("Range")))
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            if parts.path.startswith("/ngc/") and parts.path[5:] in server.ngc:
                self._serve_file(server.ngc[parts.path[5:]])
            elif parts.path == "/uc" and query.get("id") in server.drive:
                file_id = query["id"]
                if server.drive_style == "quota":
                    page = b"<html><body>Too many users have viewed or downloaded this file recently.</body></html>"
                    self._send(200, page, "text/html; charset=utf-8")
                elif server.drive_style == "link" and query.get("confirm") == "AbC1":
                    self._serve_file(server.drive[file_id])
                elif server.drive_style == "link":
                    page = (
                        f'<html><a id="uc-download-link" href="/uc?export=download&amp;confirm=AbC1&amp;id={file_id}">'
                        "Download anyway</a></html>"
                    ).encode()
                    self._send(200, page, "text/html; charset=utf-8")
                else:
                    page = (
                        "<html><body><p>Google Drive can't scan this file for viruses.</p>"
                        f'<form id="download-form" action="{server.base}/download" method="get">'
                        '<input type="submit" id="uc-download-link" value="Download anyway"/>'
                        f'<input type="hidden" name="id" value="{file_id}">'
                        '<input type="hidden" name="export" value="download">'
                        '<input type="hidden" name="confirm" value="t">'
                        '<input type="hidden" name="uuid" value="0a1b-2c3d"></form></body></html>'
                    ).encode()
                    self._send(200, page, "text/html; charset=utf-8")
            elif parts.path == "/download" and query.get("id") in server.drive:
                if query.get("confirm") != "t" or query.get("uuid") != "0a1b-2c3d":
                    self._send(403, b"<html>no</html>", "text/html")
                else:
                    self._serve_file(server.drive[query["id"]])
            else:
                self._send(404, b"not found", "text/plain")

    return Handler


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeServer]:
    state = FakeServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(NGC_URL_ENV, f"{state.base}/ngc")
    monkeypatch.setenv(GDRIVE_URL_ENV, f"{state.base}/uc")
    monkeypatch.setenv("TRIPLANENET_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(DOWNLOAD_ENV, "0")
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _payload(size: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def _files(home: Path) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file()) if home.exists() else []


NGC_ENTRY = REGISTRY["eg3d-afhqcats512-128"]
DRIVE_ENTRY = REGISTRY["ir-se50"]


# ------------------------------------------------------------------------------------------------------------
# Downloads


def test_interrupted_download_resumes_with_a_range_request(server: FakeServer, tmp_path: Path) -> None:
    data = _payload(300_000)
    server.ngc[NGC_ENTRY.filename] = data
    server.drop_once.add(f"/ngc/{NGC_ENTRY.filename}")
    home = tmp_path / "home"
    with pytest.raises(DownloadError, match="bytes are kept") as excinfo:
        download_entry(NGC_ENTRY, home=home, accept_license=True, retries=0)
    assert "\n" not in str(excinfo.value)
    part = home / NGC_ENTRY.name / f"{NGC_ENTRY.filename}.part"
    assert part.stat().st_size == len(data) // 2
    assert not NGC_ENTRY.path(home).exists()
    path = download_entry(NGC_ENTRY, home=home)  # the licence was accepted by the first call
    assert path.read_bytes() == data
    assert server.log[-1] == (f"/ngc/{NGC_ENTRY.filename}", f"bytes={len(data) // 2}-")
    assert not part.exists()
    record = recorded_hash(NGC_ENTRY.name, home)
    assert record is not None and record["sha256"] == hashlib.sha256(data).hexdigest()
    assert record["size"] == len(data) and record["filename"] == NGC_ENTRY.filename


def test_dropped_connection_is_resumed_within_one_call(server: FakeServer, tmp_path: Path) -> None:
    data = _payload(200_001, seed=1)
    server.ngc[NGC_ENTRY.filename] = data
    server.drop_once.add(f"/ngc/{NGC_ENTRY.filename}")
    messages: list[str] = []
    seen: list[tuple[int, int | None]] = []
    path = download_entry(
        NGC_ENTRY,
        home=tmp_path / "home",
        accept_license=True,
        retry_wait=0,
        notify=messages.append,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert path.read_bytes() == data
    assert [r for _, r in server.log] == [None, f"bytes={len(data) // 2}-"]
    assert any("resuming" in m for m in messages) and any("NVIDIA Source Code License" in m for m in messages)
    assert seen[-1] == (len(data), len(data))


def test_a_server_that_ignores_range_restarts_the_file(server: FakeServer, tmp_path: Path) -> None:
    data = _payload(50_000, seed=2)
    server.ngc[NGC_ENTRY.filename] = data
    server.ignore_range = True
    home = tmp_path / "home"
    part = home / NGC_ENTRY.name / f"{NGC_ENTRY.filename}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"stale bytes from another file")
    assert download_entry(NGC_ENTRY, home=home, accept_license=True).read_bytes() == data


def test_changed_file_is_refused_and_nothing_half_written_stays(server: FakeServer, tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = _payload(40_000, seed=3)
    server.ngc[NGC_ENTRY.filename] = first
    path = download_entry(NGC_ENTRY, home=home, accept_license=True)
    server.ngc[NGC_ENTRY.filename] = _payload(40_000, seed=4)  # same size, other bytes
    with pytest.raises(DownloadError, match="recorded at the first download") as excinfo:
        download_entry(NGC_ENTRY, home=home, force=True)
    message = str(excinfo.value)
    assert "\n" not in message and "nothing was kept" in message
    assert NGC_ENTRY.page in message and str(path) in message  # the manual alternative
    assert path.read_bytes() == first  # the verified file is untouched
    assert _files(home) == sorted([f"{NGC_ENTRY.name}/{NGC_ENTRY.filename}", "hashes.json", "licenses.json"])


def test_known_hash_or_size_mismatch_keeps_nothing(server: FakeServer, tmp_path: Path) -> None:
    home = tmp_path / "home"
    data = _payload(30_000, seed=5)
    server.ngc[NGC_ENTRY.filename] = data
    wrong_hash = replace(NGC_ENTRY, sha256="0" * 64)
    with pytest.raises(DownloadError, match="does not match the known"):
        download_entry(wrong_hash, home=home, accept_license=True)
    wrong_size = replace(NGC_ENTRY, size=len(data) + 1)
    with pytest.raises(DownloadError, match="expected 30,001"):
        download_entry(wrong_size, home=home)
    assert _files(home) == ["licenses.json"]
    right = replace(NGC_ENTRY, size=len(data), sha256=hashlib.sha256(data).hexdigest())
    assert download_entry(right, home=home).read_bytes() == data
    assert recorded_hash(NGC_ENTRY.name, home) is None  # known hashes are not re-recorded


@pytest.mark.parametrize("style", ["form", "link"])
def test_drive_confirmation_page_is_answered(server: FakeServer, tmp_path: Path, style: str) -> None:
    data = _payload(120_000, seed=6)
    server.drive[DRIVE_ENTRY.remote] = data
    server.drive_style = style
    path = download_entry(DRIVE_ENTRY, home=tmp_path / "home")  # MIT: no acceptance needed
    assert path.read_bytes() == data
    assert path == tmp_path / "home" / "ir-se50" / "model_ir_se50.pth"
    first, second = server.log[0][0], server.log[1][0]
    assert first.startswith("/uc?") and f"id={DRIVE_ENTRY.remote}" in first
    assert ("/download?" in second and "confirm=t" in second) if style == "form" else "confirm=AbC1" in second


def test_drive_resume_goes_through_the_confirmation_again(server: FakeServer, tmp_path: Path) -> None:
    data = _payload(90_000, seed=7)
    server.drive[DRIVE_ENTRY.remote] = data
    server.drop_once.add(f"/download?id={DRIVE_ENTRY.remote}&export=download&confirm=t&uuid=0a1b-2c3d")
    home = tmp_path / "home"
    with pytest.raises(DownloadError, match="resumes"):
        download_entry(DRIVE_ENTRY, home=home, retries=0)
    assert download_entry(DRIVE_ENTRY, home=home).read_bytes() == data
    assert server.log[-1][1] == f"bytes={len(data) // 2}-"


def test_drive_quota_page_is_a_one_line_error(server: FakeServer, tmp_path: Path) -> None:
    server.drive[DRIVE_ENTRY.remote] = b"x"
    server.drive_style = "quota"
    home = tmp_path / "home"
    with pytest.raises(DownloadError, match="quota") as excinfo:
        download_entry(DRIVE_ENTRY, home=home)
    message = str(excinfo.value)
    assert "\n" not in message and DRIVE_ENTRY.page in message and str(DRIVE_ENTRY.path(home)) in message
    assert not DRIVE_ENTRY.path(home).exists()


def test_confirmation_url_variants() -> None:
    page = "https://drive.google.com/uc?export=download&id=ABC"
    form = (
        '<form id="download-form" action="https://drive.usercontent.google.com/download" method="get">'
        '<input type="hidden" name="id" value="ABC"><input type="hidden" name="confirm" value="t">'
        '<input type="hidden" name="uuid" value="u-1"></form>'
    )
    assert confirmation_url(page, form) == "https://drive.usercontent.google.com/download?id=ABC&confirm=t&uuid=u-1"
    link = '<a href="/uc?export=download&amp;confirm=Zx9&amp;id=ABC">Download anyway</a>'
    assert confirmation_url(page, link) == "https://drive.google.com/uc?export=download&confirm=Zx9&id=ABC"
    jar = CookieJar()
    cookie = {"version": 0, "name": "download_warning_1_ABC", "value": "Tok", "port": None, "port_specified": False}
    cookie |= {"domain": ".drive.google.com", "domain_specified": True, "domain_initial_dot": True, "path": "/"}
    cookie |= {"path_specified": True, "secure": False, "expires": None, "discard": False, "comment": None}
    jar.set_cookie(Cookie(**cookie, comment_url=None, rest={}))
    assert confirmation_url(page, "<html></html>", jar) == f"{page}&confirm=Tok"
    assert confirmation_url(page, "<html>sign in</html>") is None


def test_licence_gate(server: FakeServer, tmp_path: Path) -> None:
    home = tmp_path / "home"
    server.ngc[NGC_ENTRY.filename] = _payload(1000)
    with pytest.raises(LicenseNotAccepted, match="--accept-license") as excinfo:
        download_entry(NGC_ENTRY, home=home, interactive=False)
    assert "\n" not in str(excinfo.value) and "NVIDIA Source Code License for EG3D" in str(excinfo.value)
    assert server.log == [] and _files(home) == []  # nothing fetched, nothing written
    with pytest.raises(LicenseNotAccepted):
        download_entry(NGC_ENTRY, home=home, interactive=True, ask=lambda _prompt: "n")
    assert not license_accepted(NVIDIA_EG3D_LICENSE, home)


def test_licence_prompt_records_acceptance_for_every_nvidia_file(
    server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    server.ngc[NGC_ENTRY.filename] = _payload(1000)
    prompts: list[str] = []
    monkeypatch.setattr("builtins.input", lambda prompt: prompts.append(prompt) or "y")
    download_entry(NGC_ENTRY, home=home, interactive=True)
    assert len(prompts) == 1 and "NVIDIA Source Code License for EG3D" in prompts[0]
    record = json.loads((home / "licenses.json").read_text())
    assert record[NVIDIA_EG3D_LICENSE.id]["how"] == "prompt"
    # TriPlaneNet's checkpoints embed EG3D weights: the same acceptance covers them, no second prompt.
    v2 = REGISTRY["triplanenet-v2"]
    server.drive[v2.remote] = _payload(2000)
    download_entry(v2, home=home, interactive=True)
    assert len(prompts) == 1


def test_offline_and_404_are_one_line_errors_with_the_manual_alternative(
    server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    with pytest.raises(DownloadError, match="HTTP 404") as excinfo:
        download_entry(NGC_ENTRY, home=home, accept_license=True)
    message = str(excinfo.value)
    assert "\n" not in message and NGC_ENTRY.page in message and NGC_ENTRY.url in message
    assert str(NGC_ENTRY.path(home)) in message
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    monkeypatch.setenv(NGC_URL_ENV, f"http://127.0.0.1:{port}/ngc")
    with pytest.raises(DownloadError, match="download failed") as excinfo:
        download_entry(NGC_ENTRY, home=home, retries=1, retry_wait=0)
    message = str(excinfo.value)
    assert "\n" not in message and "save it as" in message and str(NGC_ENTRY.path(home)) in message
    assert not NGC_ENTRY.path(home).exists()


# ------------------------------------------------------------------------------------------------------------
# Names


def _shapenet_bytes() -> bytes:
    """A small generator with the shapenetcars128-64 architecture, in TriPlaneNet's .pth layout."""
    config = GeneratorConfig.shapenet128().replace(
        channel_base=1024, channel_max=64, rendering={"depth_resolution": 12, "depth_resolution_importance": 12}
    )
    torch.manual_seed(0)
    generator = TriPlaneGenerator(config)
    buffer = io.BytesIO()
    state = {
        "G_ema": generator.state_dict(),
        "init_kwargs": config.to_official_kwargs(),
        "latent_avg": torch.zeros(512),
    }
    torch.save(state, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def shapenet_bytes() -> bytes:
    return _shapenet_bytes()


def _run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_download_list_and_dry_run(server: FakeServer, tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = _run("download", "--list")
    assert result.exit_code == 0, result.output
    for name in REGISTRY:
        assert name in result.output
    assert str(home) in result.output
    result = _run("download", "--dry-run", "eg3d-ffhq512-128", "triplanenet-v2")
    assert result.exit_code == 0, result.output
    assert f"{server.base}/ngc/ffhq512-128.pkl" in result.output
    assert str(home / "eg3d-ffhq512-128" / "ffhq512-128.pkl") in result.output
    assert "id=1Q7hGZw97nTmRyJ-itVGRaFJn9KyjAuhn" in result.output
    assert "recorded at the first download" in result.output and "must be accepted" in result.output
    assert server.log == [] and not home.exists()  # a dry run touches neither the network nor the cache
    result = _run("download", "eg3d-ffhq512")
    assert result.exit_code == 1 and "did you mean eg3d-ffhq512-128" in result.output
    assert _run("download").exit_code == 1


def test_default_urls_are_the_official_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(NGC_URL_ENV, raising=False)
    monkeypatch.delenv(GDRIVE_URL_ENV, raising=False)
    assert get_entry("eg3d-shapenetcars128-64").url == (
        "https://api.ngc.nvidia.com/v2/models/nvidia/research/eg3d/versions/1/files/shapenetcars128-64.pkl"
    )
    assert get_entry("triplanenet-ffhq512-128-pth").url == (
        "https://drive.google.com/uc?export=download&id=1xi6C528TybEGyPgzWTUTRqCBbUdbg7Uc"
    )
    assert {e.name for e in REGISTRY.values() if e.kind == "generator"} >= {
        "eg3d-ffhq512-128",
        "eg3d-ffhqrebalanced512-128",
        "eg3d-ffhqrebalanced512-64",
        "eg3d-afhqcats512-128",
        "eg3d-shapenetcars128-64",
    }
    assert all(e.sha256 is None or len(e.sha256) == 64 for e in REGISTRY.values())


def test_download_command_then_generate_by_name(server: FakeServer, tmp_path: Path, shapenet_bytes: bytes) -> None:
    home = tmp_path / "home"
    server.ngc["shapenetcars128-64.pkl"] = shapenet_bytes
    result = _run("generate", "--generator", "eg3d-shapenetcars128-64", "--out", str(tmp_path / "o"))
    assert result.exit_code == 1
    assert "not downloaded yet: run `triplanenet download eg3d-shapenetcars128-64`" in result.output
    result = _run("download", "eg3d-shapenetcars128-64")  # not a terminal: no prompt, the licence is not accepted
    assert result.exit_code == 1 and "--accept-license" in result.output and server.log == []
    result = _run("download", "eg3d-shapenetcars128-64", "--accept-license")
    assert result.exit_code == 0, result.output
    assert "NVIDIA Source Code License for EG3D" in result.output
    cached = home / "eg3d-shapenetcars128-64" / "shapenetcars128-64.pkl"
    assert cached.read_bytes() == shapenet_bytes
    result = _run("download", "eg3d-shapenetcars128-64", "--verify")
    assert result.exit_code == 0 and "verified" in result.output
    out = tmp_path / "gen"
    result = _run(
        "generate", "--generator", "eg3d-shapenetcars128-64", "--seeds", "0", "--views", "0", "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    assert np.asarray(Image.open(out / "seed0000_yaw+0.00.png")).shape == (128, 128, 3)
    assert "eg3d-shapenetcars128-64" in _run("download", "--list").output.split("yes")[0]


def test_global_download_flag_fetches_on_demand(server: FakeServer, tmp_path: Path, shapenet_bytes: bytes) -> None:
    home = tmp_path / "home"
    server.ngc["shapenetcars128-64.pkl"] = shapenet_bytes
    result = _run("--download", "generate", "-g", "eg3d-shapenetcars128-64", "--views", "0", "--out", str(home / "x"))
    assert result.exit_code == 1 and "--accept-license" in result.output  # the licence gate still applies
    accept_license(NVIDIA_EG3D_LICENSE, home)
    out = tmp_path / "gen"
    result = _run("--download", "generate", "-g", "eg3d-shapenetcars128-64", "--seeds", "1", "--views", "0", "--out",
                  str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (home / "eg3d-shapenetcars128-64" / "shapenetcars128-64.pkl").read_bytes() == shapenet_bytes
    assert (out / "seed0001_yaw+0.00.png").is_file()


def test_names_resolve_in_the_loaders(server: FakeServer, tmp_path: Path, shapenet_bytes: bytes) -> None:
    from triplanenet.io.checkpoints import load_generator
    from triplanenet.io.model_checkpoints import load_triplanenet, save_triplanenet
    from triplanenet.model import TriPlaneNet, TriPlaneNetConfig

    home = tmp_path / "home"
    with pytest.raises(CheckpointError, match=r"run `triplanenet download eg3d-shapenetcars128-64`"):
        load_generator("eg3d-shapenetcars128-64")
    cached = REGISTRY["eg3d-shapenetcars128-64"].path(home)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(shapenet_bytes)
    assert resolve_checkpoint("eg3d-shapenetcars128-64") == cached
    generator = load_generator("eg3d-shapenetcars128-64")
    assert generator.config.img_resolution == 128 and generator.neural_rendering_resolution == 64
    # A file of that name in the working directory would win; a plain missing path stays a path.
    assert resolve_checkpoint(tmp_path / "missing.pkl") == tmp_path / "missing.pkl"

    # triplanenet-v2 -> its cached file; official checkpoints default to the generator they were released with.
    v2 = REGISTRY["triplanenet-v2"].path(home)
    v2.parent.mkdir(parents=True)
    torch.save({"state_dict": {"x": torch.zeros(1)}, "opts": {}}, v2)
    with pytest.raises(CheckpointError, match=r"run `triplanenet download triplanenet-ffhq512-128-pth`"):
        load_triplanenet("triplanenet-v2")
    torch.manual_seed(0)
    tiny = TriPlaneNet(TriPlaneNetConfig.tiny(2)).eval()
    save_triplanenet(tiny, v2)  # our format under the official name: detected by content
    loaded = load_triplanenet("triplanenet-v2")
    assert loaded.version == 2


def test_cli_checkpoint_name_resolves(server: FakeServer, tmp_path: Path) -> None:
    from triplanenet.io.model_checkpoints import save_triplanenet
    from triplanenet.model import TriPlaneNet, TriPlaneNetConfig

    home = tmp_path / "home"
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(inputs / "a.png")
    write_dataset_json(inputs / "dataset.json", {"a.png": camera_label(torch.tensor([0.1]), torch.tensor([0.0]))[0]})
    args = ["invert", str(inputs / "a.png"), "--checkpoint", "triplanenet-v2", "--device", "cpu"]
    result = _run(*args, "--out", str(tmp_path / "o1"))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "triplanenet-v2 is not downloaded yet" in result.output and "--download" in result.output
    torch.manual_seed(0)
    path = REGISTRY["triplanenet-v2"].path(home)
    path.parent.mkdir(parents=True)
    save_triplanenet(TriPlaneNet(TriPlaneNetConfig.tiny(2)).eval(), path)
    out = tmp_path / "o2"
    result = _run(*args, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert (out / "a" / "reconstruction.png").is_file()
