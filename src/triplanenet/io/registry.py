"""Official checkpoints by name: where each file comes from, its licence, and where it is cached.

A name (``eg3d-ffhq512-128``, ``triplanenet-v2``, ...) is accepted wherever a checkpoint path is: by
:func:`triplanenet.io.checkpoints.load_generator`, :func:`triplanenet.io.model_checkpoints.load_triplanenet` and the
CLI's ``--generator`` / ``--checkpoint`` / ``--model``. :func:`resolve_checkpoint` is the one place that turns a
name into the cached file. Nothing is downloaded implicitly: a name that is not cached yet is an error that says
``triplanenet download NAME`` (or ``triplanenet --download <command> ...``, which fetches on demand).

Cache: ``$TRIPLANENET_HOME`` (default ``~/.cache/triplanenet``) holds ``<name>/<file>`` for each download, plus
``hashes.json`` (the sha256 recorded at the first download of a file whose hash we do not know) and
``licenses.json`` (licences accepted once).

Sources (the official locations, overridable for mirrors and tests):

* EG3D releases: NVIDIA's NGC catalogue (https://catalog.ngc.nvidia.com/orgs/nvidia/teams/research/models/eg3d),
  files ``$TRIPLANENET_NGC_URL/<file>.pkl``, default base
  ``https://api.ngc.nvidia.com/v2/models/nvidia/research/eg3d/versions/1/files`` (the URLs EG3D's visualizer lists);
* TriPlaneNet's releases and the identity networks it uses: Google Drive files (the ids of TriPlaneNet's README and
  ``scripts/install_deps.sh``), ``$TRIPLANENET_GDRIVE_URL?export=download&id=<id>``, default base
  ``https://drive.google.com/uc``.

Sizes and sha256 are ``None`` where we have not been able to check the official file ourselves; they are then
recorded at the first download and later downloads must agree (see :mod:`triplanenet.io.download`).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlencode

from triplanenet.errors import CheckpointError
from triplanenet.paths import triplanenet_home

NGC_URL_ENV = "TRIPLANENET_NGC_URL"
GDRIVE_URL_ENV = "TRIPLANENET_GDRIVE_URL"
DOWNLOAD_ENV = "TRIPLANENET_DOWNLOAD"
"""Set to ``1`` to let loaders download a missing named checkpoint (what ``triplanenet --download`` does)."""
DEFAULT_NGC_URL = "https://api.ngc.nvidia.com/v2/models/nvidia/research/eg3d/versions/1/files"
DEFAULT_GDRIVE_URL = "https://drive.google.com/uc"
NGC_PAGE = "https://catalog.ngc.nvidia.com/orgs/nvidia/teams/research/models/eg3d"

Kind = Literal["generator", "triplanenet", "identity", "discriminator"]
Source = Literal["ngc", "gdrive"]


@dataclass(frozen=True)
class License:
    """A licence shown before a download; ``requires_acceptance`` ones must be accepted once.

    ``gate`` names the licence whose acceptance covers this one (TriPlaneNet's checkpoints embed NVIDIA's EG3D
    weights: accepting NVIDIA's licence once covers every file under it).
    """

    id: str
    name: str
    url: str
    summary: str
    requires_acceptance: bool
    gate: License | None = None

    @property
    def acceptance(self) -> License:
        """The licence the user accepts for this one (``gate``, or itself)."""
        return self.gate or self


NVIDIA_EG3D_LICENSE = License(
    id="nvidia-source-code-license-eg3d",
    name="NVIDIA Source Code License for EG3D",
    url="https://github.com/NVlabs/eg3d/blob/main/LICENSE.txt",
    summary="non-commercial use only (research or evaluation); redistribution under the same licence",
    requires_acceptance=True,
)
TRIPLANENET_LICENSE = License(
    id="triplanenet-mit+nvidia-eg3d",
    name="MIT (TriPlaneNet code and encoders) + NVIDIA Source Code License for EG3D (the EG3D weights inside)",
    url="https://github.com/anantarb/triplanenet/blob/main/LICENSE",
    summary="the checkpoint embeds NVIDIA's EG3D generator weights, so NVIDIA's non-commercial terms apply to it",
    requires_acceptance=True,
    gate=NVIDIA_EG3D_LICENSE,
)
INSIGHTFACE_LICENSE = License(
    id="mit-treb1en-insightface",
    name="MIT (TreB1eN/InsightFace_Pytorch)",
    url="https://github.com/TreB1eN/InsightFace_Pytorch/blob/master/LICENSE",
    summary="trained on MS-Celeb-1M; check the dataset's terms for your use",
    requires_acceptance=False,
)
CURRICULARFACE_LICENSE = License(
    id="curricularface-unspecified",
    name="as released by HuangYG123/CurricularFace (no licence file we could check)",
    url="https://github.com/HuangYG123/CurricularFace",
    summary="research use as distributed by the authors; used here only as an evaluation metric",
    requires_acceptance=False,
)


@dataclass(frozen=True)
class RegistryEntry:
    """One downloadable file.

    Attributes:
        name: the name users type (``eg3d-ffhq512-128``).
        description: one line for ``download --list``.
        kind: what it loads as (generator, whole TriPlaneNet model, identity network, discriminator).
        source: ``ngc`` (``remote`` = file name) or ``gdrive`` (``remote`` = Drive file id).
        remote: see ``source``.
        filename: the file's name in the cache (the official name).
        size: bytes, when we know them (else ``None``).
        sha256: hex digest, when we know it (else ``None``: recorded at the first download).
        license: shown before downloading.
        page: where a person downloads the file by hand.
        generator: for TriPlaneNet checkpoints, the name of the generator they were trained with.
    """

    name: str
    description: str
    kind: Kind
    source: Source
    remote: str
    filename: str
    license: License
    page: str
    size: int | None = None
    sha256: str | None = None
    generator: str | None = None

    @property
    def url(self) -> str:
        """The download URL (honours ``$TRIPLANENET_NGC_URL`` / ``$TRIPLANENET_GDRIVE_URL``)."""
        if self.source == "ngc":
            base = os.environ.get(NGC_URL_ENV, "").strip() or DEFAULT_NGC_URL
            return f"{base.rstrip('/')}/{self.remote}"
        base = os.environ.get(GDRIVE_URL_ENV, "").strip() or DEFAULT_GDRIVE_URL
        return f"{base}?{urlencode({'export': 'download', 'id': self.remote})}"

    def path(self, home: Path | None = None) -> Path:
        """Where the file is (or will be) cached: ``<home>/<name>/<filename>``."""
        return (home or cache_home()) / self.name / self.filename


def _eg3d(release: str, description: str) -> RegistryEntry:
    return RegistryEntry(
        name=f"eg3d-{release}",
        description=description,
        kind="generator",
        source="ngc",
        remote=f"{release}.pkl",
        filename=f"{release}.pkl",
        license=NVIDIA_EG3D_LICENSE,
        page=NGC_PAGE,
    )


def _drive(name: str, description: str, kind: Kind, file_id: str, filename: str, license: License, **kw: str):
    return RegistryEntry(
        name=name,
        description=description,
        kind=kind,
        source="gdrive",
        remote=file_id,
        filename=filename,
        license=license,
        page=f"https://drive.google.com/file/d/{file_id}/view",
        **kw,  # type: ignore[arg-type]
    )


REGISTRY: dict[str, RegistryEntry] = {
    entry.name: entry
    for entry in (
        _eg3d("ffhq512-128", "EG3D FFHQ 512², neural rendering 128² (the generator TriPlaneNet was trained with)"),
        _eg3d("ffhqrebalanced512-128", "EG3D FFHQ-rebalanced 512², neural rendering 128² (better side views)"),
        _eg3d("ffhqrebalanced512-64", "EG3D FFHQ-rebalanced 512², neural rendering 64²"),
        _eg3d("afhqcats512-128", "EG3D AFHQv2 cats 512², neural rendering 128²"),
        _eg3d("shapenetcars128-64", "EG3D ShapeNet cars 128², neural rendering 64² (2X super-resolution)"),
        _drive(
            "triplanenet-v2",
            "TriPlaneNet v2 (WACV'24), recommended; pairs with triplanenet-ffhq512-128-pth",
            "triplanenet",
            "1Q7hGZw97nTmRyJ-itVGRaFJn9KyjAuhn",
            "triplanenet_v2_final.pth",
            TRIPLANENET_LICENSE,
            generator="triplanenet-ffhq512-128-pth",
        ),
        _drive(
            "triplanenet-v1",
            "TriPlaneNet v1; pairs with triplanenet-ffhq512-128-pth",
            "triplanenet",
            "17pzNC00BOFCu0oCqbCybfAiaZF7iwNUU",
            "triplanenet_final.pth",
            TRIPLANENET_LICENSE,
            generator="triplanenet-ffhq512-128-pth",
        ),
        _drive(
            "triplanenet-ffhq512-128-pth",
            "EG3D ffhq512-128 converted by TriPlaneNet (.pth with latent_avg); the generator of triplanenet-v1/v2",
            "generator",
            "1xi6C528TybEGyPgzWTUTRqCBbUdbg7Uc",
            "ffhq512-128.pth",
            NVIDIA_EG3D_LICENSE,
        ),
        _drive(
            "ir-se50",
            "IR-SE50 ArcFace (identity loss of TriPlaneNet training)",
            "identity",
            "1KW7bjndL3QG3sxBbZxreGHigcCCpsDgn",
            "model_ir_se50.pth",
            INSIGHTFACE_LICENSE,
        ),
        _drive(
            "curricularface",
            "CurricularFace IR-101 backbone (identity-similarity metric)",
            "identity",
            "1f4IwVa2-Bn9vWLwB-bUwm53U_MlvinAj",
            "CurricularFace_Backbone.pth",
            CURRICULARFACE_LICENSE,
        ),
        _drive(
            "discriminator-v2",
            "StyleGAN2-ADA discriminator of TriPlaneNet v2 training (--use_discriminator)",
            "discriminator",
            "1KET4pHodyTeYsMtJTTKMh0YJ2a-LhgLl",
            "discriminator.pth",
            TRIPLANENET_LICENSE,
        ),
    )
}
"""Every downloadable name."""


def cache_home() -> Path:
    """``$TRIPLANENET_HOME`` (default ``~/.cache/triplanenet``)."""
    return triplanenet_home()


def get_entry(name: str) -> RegistryEntry:
    """The entry of a registry name.

    Raises:
        CheckpointError: unknown name (with the closest known names).
    """
    if name in REGISTRY:
        return REGISTRY[name]
    close = difflib.get_close_matches(name, list(REGISTRY), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise CheckpointError(f"unknown checkpoint name {name!r}; {hint}see `triplanenet download --list`")


def is_registry_name(value: object) -> bool:
    """Whether ``value`` (a str or Path) spells a registry name."""
    return isinstance(value, str | os.PathLike) and os.fspath(value) in REGISTRY


def downloads_enabled() -> bool:
    """Whether loaders may download a missing named checkpoint (``triplanenet --download`` /
    ``$TRIPLANENET_DOWNLOAD=1``)."""
    return os.environ.get(DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes")


def _looks_like_a_name(text: str) -> bool:
    return bool(text) and os.sep not in text and "/" not in text and "." not in text


def resolve_checkpoint(value: str | os.PathLike[str], download: bool | None = None) -> Path:
    """A checkpoint argument -> the file to open. The one name-resolution step every loader and command uses.

    An existing file wins; otherwise a registry name resolves to its cached file. Anything else is returned as a
    path, so the loader reports the missing file as before.

    Args:
        download: fetch a named checkpoint that is not cached yet (licence gate included); ``None`` follows
            :func:`downloads_enabled`.

    Raises:
        CheckpointError: a registry name that is not downloaded (one line saying how to get it), a failed download,
            or a path-less word that is neither a file nor a known name.
    """
    path = Path(value)
    if path.is_file():
        return path
    text = os.fspath(value)
    if text not in REGISTRY:
        if _looks_like_a_name(text) and not path.exists():
            close = difflib.get_close_matches(text, list(REGISTRY), n=3, cutoff=0.6)
            if close:
                raise CheckpointError(
                    f"{text}: no such file, and not a known checkpoint name (did you mean {', '.join(close)}?); "
                    "see `triplanenet download --list`"
                )
        return path
    entry = REGISTRY[text]
    cached = entry.path()
    if cached.is_file():
        return cached
    if download is None:
        download = downloads_enabled()
    if not download:
        raise CheckpointError(
            f"{entry.name} is not downloaded yet: run `triplanenet download {entry.name}` (or add --download: "
            f"`triplanenet --download <command> ...`); it will be saved as {cached}"
        )
    from triplanenet.io.download import download_with_progress

    return download_with_progress(entry)


def default_generator_for(checkpoint: str | os.PathLike[str]) -> str | None:
    """The registry name of the generator a named TriPlaneNet checkpoint was trained with (None otherwise)."""
    text = os.fspath(checkpoint)
    entry = REGISTRY.get(text)
    return entry.generator if entry is not None else None
