"""Download a registry entry into the cache: resumable, verified, atomic, licence-gated. Standard library only.

``download_entry(entry)`` does, in order:

1. return the cached file if it is there (unless ``force``);
2. show the licence; one that needs acceptance (NVIDIA's) must have been accepted once (``accept_license=True``,
   or ``y`` at the prompt when interactive); the acceptance is recorded in ``<home>/licenses.json``;
3. stream the file into ``<home>/<name>/<file>.part``, resuming an existing ``.part`` with an HTTP ``Range``
   request (a server that ignores it restarts the file from zero), retrying dropped connections;
   Google Drive's "can't scan this file for viruses" page is answered by submitting its confirmation form (or
   following its ``confirm=`` link / ``download_warning`` cookie, the older variants);
4. check the size and sha256 when the registry knows them; otherwise compare with the sha256 recorded at the first
   download in ``<home>/hashes.json`` (recording it the first time);
5. ``os.replace`` the ``.part`` onto the final name. A file that fails the checks is deleted, never kept.

Every failure is one :class:`DownloadError` line that ends with the manual alternative (the page / URL and the path
to save the file as).
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from html.parser import HTMLParser
from http.client import HTTPException, HTTPResponse
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any, BinaryIO
from urllib.error import HTTPError, URLError
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit
from urllib.request import HTTPCookieProcessor, OpenerDirector, Request, build_opener

from triplanenet.errors import CheckpointError
from triplanenet.io.hashing import file_sha256
from triplanenet.io.registry import License, RegistryEntry, cache_home

HASHES_FILE = "hashes.json"
LICENSES_FILE = "licenses.json"
PART_SUFFIX = ".part"
CHUNK = 1 << 20
_MAX_HTML = 2 << 20
USER_AGENT = "triplanenet-download/1 (+python-urllib)"

ProgressCallback = Callable[[int, int | None], None]
"""``progress(bytes_done, total_or_None)``, called as bytes arrive (and once at the start)."""
Notify = Callable[[str], None]


class DownloadError(CheckpointError):
    """A download failed or its file did not verify; the message is one line with the manual alternative."""


class LicenseNotAccepted(DownloadError):
    """A licence that must be accepted has not been (non-interactive run without ``--accept-license``)."""


def manual_hint(entry: RegistryEntry, target: Path) -> str:
    """``download it by hand from <page> (<url>) and save it as <path>``."""
    direct = f" (direct link: {entry.url})" if entry.url != entry.page else ""
    return f"download it by hand from {entry.page}{direct} and save it as {target}"


# ------------------------------------------------------------------------------------------------------------
# Small JSON records in the cache


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _update_json(path: Path, key: str, value: dict[str, Any]) -> None:
    from triplanenet.io.atomic import write_text_atomic

    data = _read_json(path)
    data[key] = value
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def recorded_hash(name: str, home: Path | None = None) -> dict[str, Any] | None:
    """The sha256 record of a name in ``hashes.json`` (``{"sha256", "size", "filename", "url", "recorded_at"}``)."""
    record = _read_json((home or cache_home()) / HASHES_FILE).get(name)
    return record if isinstance(record, dict) else None


def license_accepted(license: License, home: Path | None = None) -> bool:
    """Whether ``license`` was accepted before (recorded in ``licenses.json``)."""
    gate = license.acceptance
    return not license.requires_acceptance or gate.id in _read_json((home or cache_home()) / LICENSES_FILE)


def accept_license(license: License, home: Path | None = None, how: str = "--accept-license") -> None:
    """Record that the user accepted ``license`` (its :attr:`~License.acceptance` licence)."""
    gate = license.acceptance
    _update_json(
        (home or cache_home()) / LICENSES_FILE,
        gate.id,
        {"name": gate.name, "url": gate.url, "accepted_at": _now(), "how": how},
    )


def describe_license(entry: RegistryEntry) -> str:
    """One line: ``licence: NAME (URL): summary``."""
    return f"licence of {entry.name}: {entry.license.name} ({entry.license.url}): {entry.license.summary}"


def ensure_license(
    entry: RegistryEntry,
    *,
    home: Path | None = None,
    accept: bool = False,
    interactive: bool | None = None,
    ask: Callable[[str], str] | None = None,
) -> None:
    """Pass when the entry's licence needs no acceptance or was accepted; otherwise accept it now (``accept``), or
    ask (``interactive``, default: stdin and stderr are terminals).

    Raises:
        LicenseNotAccepted: not accepted.
    """
    license = entry.license
    if license_accepted(license, home):
        return
    if accept:
        accept_license(license, home)
        return
    if interactive is None:
        interactive = sys.stdin.isatty() and sys.stderr.isatty()
    if interactive:
        prompt = ask or input
        gate = license.acceptance
        answer = prompt(f"Accept the {gate.name} ({gate.url}) for {entry.name}? [y/N] ").strip().lower()
        if answer in ("y", "yes"):
            accept_license(license, home, how="prompt")
            return
    gate = license.acceptance
    raise LicenseNotAccepted(
        f"{entry.name} is under the {license.name} ({license.summary}); accept the {gate.name} ({gate.url}) once "
        f"with `triplanenet download {entry.name} --accept-license`"
    )


# ------------------------------------------------------------------------------------------------------------
# HTTP


class _ConfirmPageParser(HTMLParser):
    """Collects the forms (action + inputs) and the links of an HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[tuple[str, dict[str, str]]] = []
        self.links: list[str] = []
        self._form: tuple[str, dict[str, str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._form = (values.get("action", ""), {})
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None and values.get("name"):
            if values.get("type", "text").lower() in ("hidden", "text", "submit") and "value" in values:
                self._form[1][values["name"]] = values["value"]
        elif tag == "a" and values.get("href"):
            self.links.append(values["href"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None


def confirmation_url(page_url: str, body: str, cookies: CookieJar | None = None) -> str | None:
    """The URL that Google Drive's virus-scan warning page points to for the actual file, or None.

    Current pages hold a ``<form id="download-form" action=".../download">`` with hidden ``id``, ``export``,
    ``confirm`` and ``uuid`` inputs (submitted with GET); older ones a link with ``confirm=<token>`` or a
    ``download_warning_*`` cookie whose value is the token.
    """
    parser = _ConfirmPageParser()
    with contextlib.suppress(Exception):
        parser.feed(body)
    for action, inputs in parser.forms:
        if "confirm" in inputs or "id" in inputs:
            target = urljoin(page_url, action or page_url)
            parts = urlsplit(target)
            query = dict(parse_qsl(parts.query))
            query.update(inputs)
            return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))
    for href in parser.links:
        if "confirm=" in href:
            return urljoin(page_url, html.unescape(href))
    for cookie in cookies or ():
        if cookie.name.startswith("download_warning"):
            parts = urlsplit(page_url)
            query = dict(parse_qsl(parts.query))
            query["confirm"] = cookie.value
            return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))
    return None


def _drive_refusal(body: str) -> str:
    lowered = body.lower()
    if "quota" in lowered or "too many users" in lowered:
        return "Google Drive refuses: the file's download quota is exceeded for now (try again later)"
    if "sign in" in lowered or "accounts.google.com" in lowered:
        return "Google Drive asks to sign in (the file is not public, or the link changed)"
    return "the server sent a web page instead of the file"


class _Fetcher:
    """One opener (with cookies) per download; opens a URL at a byte offset, answering a confirmation page."""

    def __init__(self, entry: RegistryEntry, timeout: float) -> None:
        self.entry = entry
        self.timeout = timeout
        self.cookies = CookieJar()
        self.opener: OpenerDirector = build_opener(HTTPCookieProcessor(self.cookies))
        self.url = entry.url

    def _request(self, url: str, start: int) -> HTTPResponse:
        headers = {"User-Agent": USER_AGENT, "Accept": "*/*", "Accept-Encoding": "identity"}
        if start > 0:
            headers["Range"] = f"bytes={start}-"
        return self.opener.open(Request(url, headers=headers), timeout=self.timeout)  # type: ignore[return-value]

    def open(self, start: int) -> HTTPResponse:
        """Response positioned at ``start`` (206), or at 0 (200, Range ignored). 416 raises ``HTTPError``."""
        response = self._request(self.url, start)
        for _ in range(3):
            content_type = response.headers.get("Content-Type", "")
            if not content_type.lower().startswith("text/html"):
                return response
            body = response.read(_MAX_HTML).decode("utf-8", "replace")
            page_url = response.geturl()
            response.close()
            follow = confirmation_url(page_url, body, self.cookies)
            if follow is None or follow == self.url:
                raise DownloadError(f"{self.entry.name}: {_drive_refusal(body)}")
            self.url = follow
            response = self._request(follow, start)
        raise DownloadError(f"{self.entry.name}: {_drive_refusal('')} (confirmation loop)")


def _content_range(response: HTTPResponse) -> tuple[int, int | None] | None:
    """``(first byte, total or None)`` of a 206 response's ``Content-Range: bytes a-b/total``."""
    value = response.headers.get("Content-Range", "")
    try:
        unit, _, rest = value.partition(" ")
        span, _, total = rest.partition("/")
        first = int(span.split("-")[0])
        if unit.strip().lower() != "bytes":
            return None
        return first, (int(total) if total.strip() not in ("", "*") else None)
    except ValueError:
        return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[BinaryIO]:
    """Open ``path`` for appending, holding an exclusive lock (POSIX) so two downloads cannot interleave."""
    handle = open(path, "ab")  # noqa: SIM115 (closed below)
    try:
        try:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - Windows
            pass
        except OSError:
            raise DownloadError(f"{path}: another download of this file is running; wait for it to finish") from None
        yield handle
    finally:
        handle.close()


def _transfer(
    fetcher: _Fetcher,
    part: Path,
    expected_size: int | None,
    progress: ProgressCallback | None,
) -> None:
    """One attempt: append the rest of the file to ``part``. Raises the network error on a dropped connection."""
    start = part.stat().st_size if part.exists() else 0
    try:
        response = fetcher.open(start)
    except HTTPError as exc:
        if exc.code == 416 and start > 0:
            return  # nothing left to fetch: the .part is complete (it is verified next)
        raise
    with response, _locked(part) as handle:
        if start > 0 and response.status == 206:
            span = _content_range(response)
            if span is not None and span[0] != start:
                raise DownloadError(f"{fetcher.entry.name}: the server resumed at byte {span[0]}, not {start}")
            total = span[1] if span is not None and span[1] is not None else None
            if total is None and response.headers.get("Content-Length"):
                total = start + int(response.headers["Content-Length"])
        else:
            handle.truncate(0)  # a 200 answer is the whole file: start over
            start = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        if expected_size is not None and total is not None and total != expected_size:
            raise _Mismatch(f"the server offers {total:,} bytes, expected {expected_size:,}")
        done = start
        if progress is not None:
            progress(done, total)
        while True:
            block = response.read(CHUNK)
            if not block:
                break
            handle.write(block)
            done += len(block)
            if progress is not None:
                progress(done, total)
            if expected_size is not None and done > expected_size:
                raise _Mismatch(f"the download is larger than the expected {expected_size:,} bytes")
        handle.flush()
        os.fsync(handle.fileno())
        if total is not None and done < total:
            raise HTTPException(f"connection closed after {done:,} of {total:,} bytes")


class _Mismatch(Exception):
    """The file is not the expected one (size or hash)."""


_NETWORK_ERRORS = (URLError, HTTPException, ConnectionError, TimeoutError, OSError)


def download_entry(
    entry: RegistryEntry,
    *,
    home: Path | None = None,
    force: bool = False,
    accept_license: bool = False,
    interactive: bool | None = None,
    ask: Callable[[str], str] | None = None,
    progress: ProgressCallback | None = None,
    notify: Notify | None = None,
    retries: int = 3,
    timeout: float = 60.0,
    retry_wait: float = 2.0,
    show_license: bool = True,
) -> Path:
    """Download ``entry`` into the cache (see the module docstring) and return the file's path.

    Args:
        force: download again even if the file is cached (the new file must still verify).
        accept_license: accept a licence that needs it, without asking.
        interactive: may prompt for the licence (default: when stdin and stderr are terminals); ``ask`` is the
            prompt function (default ``input``).
        progress: byte-progress callback; ``notify``: one-line messages (licence, resume); both optional.
        show_license: print the licence line through ``notify`` first.
        retries: how many times a dropped connection is resumed within this call (waiting ``retry_wait`` seconds
            times the attempt number).

    Raises:
        DownloadError: licence not accepted, network failure (the ``.part`` is kept for the next try), or a file
            that does not verify (nothing is kept).
    """
    home = home or cache_home()
    target = entry.path(home)
    say = notify or (lambda _message: None)
    if target.is_file() and not force:
        return target
    if show_license:
        say(describe_license(entry))
    ensure_license(entry, home=home, accept=accept_license, interactive=interactive, ask=ask)
    part = target.with_name(target.name + PART_SUFFIX)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"{entry.name}: cannot create {target.parent} ({exc.strerror or exc})") from None
    if part.exists() and part.stat().st_size > 0:
        say(f"resuming {entry.name} from byte {part.stat().st_size:,}")
    fetcher = _Fetcher(entry, timeout)
    attempt = 0
    while True:
        try:
            _transfer(fetcher, part, entry.size, progress)
            break
        except _Mismatch as exc:
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"{entry.name}: {exc}; the file changed upstream or the download is corrupt, nothing was kept; "
                f"{manual_hint(entry, target)}"
            ) from None
        except HTTPError as exc:
            if exc.code == 416:
                part.unlink(missing_ok=True)  # the .part is larger than the file: it cannot be resumed
            raise DownloadError(
                f"{entry.name}: {entry.url} answered HTTP {exc.code} {exc.reason}; {manual_hint(entry, target)}"
            ) from None
        except DownloadError as exc:
            raise DownloadError(f"{exc}; {manual_hint(entry, target)}") from None
        except _NETWORK_ERRORS as exc:
            attempt += 1
            kept = part.stat().st_size if part.exists() else 0
            if attempt > retries:
                reason = getattr(exc, "reason", None) or exc
                raise DownloadError(
                    f"{entry.name}: download failed ({type(exc).__name__}: {reason}); {kept:,} bytes are kept in "
                    f"{part} and the next `triplanenet download {entry.name}` resumes; or {manual_hint(entry, target)}"
                ) from None
            say(f"connection lost ({type(exc).__name__}); resuming {entry.name} from byte {kept:,}")
            time.sleep(retry_wait * attempt)
    return _verify_and_install(entry, part, target, home)


def _verify_and_install(entry: RegistryEntry, part: Path, target: Path, home: Path) -> Path:
    size = part.stat().st_size
    problem = None
    if entry.size is not None and size != entry.size:
        problem = f"it has {size:,} bytes, expected {entry.size:,}"
    digest = file_sha256(part) if problem is None else ""
    record = recorded_hash(entry.name, home)
    if problem is None and entry.sha256 is not None and digest != entry.sha256.lower():
        problem = f"sha256 {digest[:16]}... does not match the known {entry.sha256[:16]}..."
    elif (
        problem is None
        and entry.sha256 is None
        and record is not None
        and record.get("filename") == entry.filename
        and record.get("sha256") != digest
    ):
        problem = (
            f"sha256 {digest[:16]}... differs from the {str(record.get('sha256'))[:16]}... recorded at the first "
            f"download ({record.get('recorded_at', '?')}; {home / HASHES_FILE})"
        )
    if problem is not None:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"{entry.name}: {problem}; the file changed upstream or the download is corrupt, nothing was kept; "
            f"{manual_hint(entry, target)}"
        )
    os.replace(part, target)
    if entry.sha256 is None and record is None:
        _update_json(
            home / HASHES_FILE,
            entry.name,
            {"filename": entry.filename, "sha256": digest, "size": size, "url": entry.url, "recorded_at": _now()},
        )
    return target


def verify_cached(entry: RegistryEntry, home: Path | None = None) -> str:
    """Re-hash a cached file and compare it with the known or recorded sha256; returns the digest.

    Raises:
        DownloadError: not cached, or the digest differs.
    """
    home = home or cache_home()
    target = entry.path(home)
    if not target.is_file():
        raise DownloadError(f"{entry.name} is not downloaded yet: run `triplanenet download {entry.name}`")
    digest = file_sha256(target)
    record = recorded_hash(entry.name, home)
    expected = entry.sha256 or (record or {}).get("sha256")
    if entry.size is not None and target.stat().st_size != entry.size:
        raise DownloadError(f"{target}: {target.stat().st_size:,} bytes, expected {entry.size:,}; download it again")
    if expected and digest != expected:
        raise DownloadError(
            f"{target}: sha256 {digest[:16]}... does not match {str(expected)[:16]}...; remove it and run "
            f"`triplanenet download {entry.name}` again"
        )
    return digest


def download_with_progress(entry: RegistryEntry, **kwargs: Any) -> Path:
    """:func:`download_entry` with the licence and messages printed to stderr and a rich progress bar (shown when
    stderr is a terminal). What ``triplanenet download`` and ``triplanenet --download <command>`` use."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    console = Console(stderr=True)
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not sys.stderr.isatty(),
    )
    task = bar.add_task(entry.name, total=entry.size)

    def progress(done: int, total: int | None) -> None:
        bar.update(task, completed=done, total=total)

    def notify(message: str) -> None:
        console.print(message, highlight=False, soft_wrap=True)

    home = kwargs.get("home") or cache_home()
    if entry.path(home).is_file() and not kwargs.get("force"):
        return entry.path(home)
    # The licence is shown and settled before the progress bar takes over the terminal (the prompt needs it).
    notify(describe_license(entry))
    ensure_license(
        entry,
        home=home,
        accept=bool(kwargs.pop("accept_license", False)),
        interactive=kwargs.pop("interactive", None),
        ask=kwargs.pop("ask", None),
    )
    kwargs.setdefault("notify", notify)
    with bar:
        return download_entry(entry, progress=progress, show_license=False, **kwargs)
