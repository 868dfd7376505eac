"""Format detection by structure: zip magic, a safetensors header that is N bytes of JSON, a pickle PROTO 2..5.

The regression: a safetensors file whose 8-byte header length has low byte 0x80 (one file in 32 of those our own
writer pads to 8 bytes) was taken for a pickle, and generators written by ``save_generator`` failed to load.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from triplanenet.eg3d.config import GeneratorConfig
from triplanenet.io import checkpoints, model_checkpoints, read_generator_checkpoint, save_generator
from triplanenet.io.safetensors_files import write_safetensors
from triplanenet.io.sniff import MAX_SAFETENSORS_HEADER, sniff_format


def _safetensors_bytes(header_length: int) -> bytes:
    """A valid safetensors file (one float32 tensor) whose JSON header is exactly ``header_length`` bytes."""
    header = json.dumps({"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    assert header_length >= len(header)
    return header_length.to_bytes(8, "little") + header.ljust(header_length, b" ") + b"\0\0\x80?"


@pytest.mark.parametrize("low_byte", range(256))
def test_every_header_length_low_byte_is_sniffed_as_safetensors(tmp_path: Path, low_byte: int) -> None:
    # Second bytes 2..5 make the first two bytes read as a pickle PROTO opcode (0x80, 2..5) when low_byte is 0x80.
    for second_byte in (0, 2, 5):
        path = tmp_path / f"{low_byte}-{second_byte}.safetensors"
        path.write_bytes(_safetensors_bytes(0x10000 + (second_byte << 8) + low_byte))
        assert sniff_format(path) == "safetensors"
    with safe_open(str(path), framework="pt") as handle:  # the generated files are real safetensors files
        assert torch.equal(handle.get_tensor("t"), torch.ones(1))


def _pad_to_header_length(path: Path, target_low_bytes: tuple[int, int]) -> int:
    """Rewrite ``path`` (a safetensors file) with padding metadata until its header length ends in the two bytes
    ``target_low_bytes`` (little-endian order: byte 0, byte 1). Returns the header length."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata() or {})
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    padding = 0
    for _ in range(8):
        write_safetensors(path, tensors, {**metadata, "padding": "x" * padding})
        length = int.from_bytes(path.read_bytes()[:8], "little")
        low = target_low_bytes[0] + (target_low_bytes[1] << 8)
        if length % 65536 == low:
            return length
        padding += (low - length % 65536) % 65536
    raise AssertionError("could not reach the header length")


def test_a_saved_generator_whose_header_length_looks_like_a_pickle_loads(tmp_path: Path) -> None:
    path = save_generator(_tiny_generator(), tmp_path / "generator.safetensors")
    length = _pad_to_header_length(path, (0x80, 0x04))
    assert path.read_bytes()[:2] == b"\x80\x04" and length <= MAX_SAFETENSORS_HEADER
    raw = read_generator_checkpoint(path)
    assert raw.source_format == "safetensors" and raw.config == GeneratorConfig.tiny()


def test_a_model_file_whose_header_length_looks_like_a_pickle_is_recognised(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    write_safetensors(path, {"x": torch.zeros(2)}, {"format": model_checkpoints.MODEL_FORMAT})
    _pad_to_header_length(path, (0x80, 0x02))
    assert path.read_bytes()[:2] == b"\x80\x02"
    assert model_checkpoints.is_triplanenet_file(path)


def _tiny_generator() -> torch.nn.Module:
    from triplanenet.eg3d.generator import TriPlaneGenerator

    return TriPlaneGenerator(GeneratorConfig.tiny())


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_pickles_of_protocols_2_to_5_are_pickles(tmp_path: Path, protocol: int) -> None:
    path = tmp_path / "data.pkl"
    path.write_bytes(pickle.dumps({"a": [1, 2.5]}, protocol=protocol))
    assert sniff_format(path) == "pickle"


def test_torch_save_files_zip_and_legacy(tmp_path: Path) -> None:
    torch.save({"w": torch.ones(2)}, tmp_path / "zip.pth")
    torch.save({"w": torch.ones(2)}, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    with zipfile.ZipFile(tmp_path / "empty.zip", "w"):
        pass
    assert sniff_format(tmp_path / "zip.pth") == "zip"
    assert sniff_format(tmp_path / "legacy.pth") == "pickle"
    assert sniff_format(tmp_path / "empty.zip") == "zip"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80",
        b"\x80\x01rest",  # protocol 1 is not a format we write or read
        b"\x80\x06rest",  # no such protocol
        pickle.dumps([1], protocol=0),
        (40).to_bytes(8, "little") + b"{" + b" " * 20,  # header longer than the file
        (24).to_bytes(8, "little") + b'{"t": [1, 2, 3' + b" " * 10,  # header that is not JSON
        (8).to_bytes(8, "little") + b"[1, 2]  ",  # JSON, but not an object
        (1).to_bytes(8, "little") + b"{",  # header length below 2
        (MAX_SAFETENSORS_HEADER + 1).to_bytes(8, "little") + b"{}",  # beyond the bound
        b"\x86\x04" + b"\xff" * 16,  # random bytes
    ],
    ids=["empty", "0x80", "proto1", "proto6", "proto0", "short", "bad-json", "json-list", "tiny", "huge", "junk"],
)
def test_other_bytes_are_no_known_format(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(data)
    assert sniff_format(path) is None


def test_both_loaders_share_the_one_sniffer() -> None:
    assert checkpoints.sniff_format is sniff_format and model_checkpoints.sniff_format is sniff_format
    assert not hasattr(model_checkpoints, "_is_safetensors")
