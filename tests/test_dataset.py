"""FaceDataset (official folder / EG3D zip layout) and make_loader: items, mirror, conf maps, splits, errors."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from triplanenet.data import DatasetError, FaceDataset, make_loader, split_group, split_names
from triplanenet.eg3d.camera import camera_label, mirror_label
from triplanenet.errors import CameraError, ConfigError
from triplanenet.io.cameras import write_dataset_json


def _pixels(index: int, size: int) -> np.ndarray:
    return np.random.default_rng(index).integers(0, 256, size=(size, size, 3), dtype=np.uint8)


def _yaw(index: int) -> float:
    return -0.5 + 0.1 * (index % 11)


def _conf(index: int, size: int = 256) -> np.ndarray:
    ys, xs = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    return (0.1 + xs / size + 0.01 * index + 0.001 * ys / size).astype(np.float32)  # grows left → right


def make_dataset(
    root: Path,
    names: list[str],
    size: int = 16,
    conf: bool = False,
    conf_size: int = 256,
    labels: list[str] | None = None,
) -> dict[str, np.ndarray]:
    """Write PNGs, dataset.json (cameras at varying yaw) and optional conf maps; return the pixels by name."""
    pixels = {}
    for i, name in enumerate(names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels[name] = _pixels(i, size)
        Image.fromarray(pixels[name]).save(path)
        if conf:
            (root / "conf_map").mkdir(exist_ok=True)
            np.save(root / "conf_map" / f"{Path(name).stem}.npy", _conf(i, conf_size))
    listed = names if labels is None else labels
    write_dataset_json(root / "dataset.json", [(n, camera_label(_yaw(i), 0.05)[0]) for i, n in enumerate(listed)])
    return pixels


def _as_image(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels).permute(2, 0, 1).float() / 127.5 - 1.0


def _zip_folder(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
    return target


# ------------------------------------------------------------------------------------------------------------
# Items


def test_items_shapes_values_and_cameras(tmp_path: Path) -> None:
    names = ["b.png", "a.png", "sub/c.png"]
    pixels = make_dataset(tmp_path, names)
    ds = FaceDataset(tmp_path, resolution=16)
    assert len(ds) == 3
    assert ds.files == ["a.png", "b.png", "sub/c.png"]  # sorted, like EG3D's ImageFolderDataset
    assert ds.names == ["a", "b", "sub/c"]
    for index, file in enumerate(ds.files):
        item = ds[index]
        assert set(item) == {"image", "camera", "name"}
        assert item["name"] == ds.names[index]
        assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32
        assert item["image"].min() >= -1 and item["image"].max() <= 1
        torch.testing.assert_close(item["image"], _as_image(pixels[file]), rtol=0, atol=1e-6)
        written = camera_label(_yaw(names.index(file)), 0.05)[0]
        assert item["camera"].shape == (25,) and item["camera"].dtype == torch.float32
        assert torch.equal(item["camera"], written)
    assert ds.cameras.shape == (3, 25)
    assert torch.equal(ds[-1]["camera"], ds[2]["camera"])
    with pytest.raises(IndexError):
        ds[3]


def test_resize_to_resolution(tmp_path: Path) -> None:
    pixels = make_dataset(tmp_path, ["a.png"], size=64)
    image = FaceDataset(tmp_path, resolution=32)[0]["image"]
    assert image.shape == (3, 32, 32) and image.min() >= -1 and image.max() <= 1
    # antialias=False is the official tensor Resize: at 2× it averages 2×2 blocks exactly
    plain = FaceDataset(tmp_path, resolution=32, antialias=False)[0]["image"]
    box = torch.nn.functional.avg_pool2d(_as_image(pixels["a.png"])[None], 2)[0]
    torch.testing.assert_close(plain, box, rtol=0, atol=1e-5)
    assert not torch.allclose(image, plain, atol=1e-3)  # the antialiased kernel is wider


def test_mirror_flips_pixels_and_camera(tmp_path: Path) -> None:
    pixels = make_dataset(tmp_path, ["a.png", "b.png"])
    ds = FaceDataset(tmp_path, resolution=16, mirror=True)
    item = ds[1]
    assert set(item) == {"image", "camera", "name", "image_mirror", "camera_mirror"}
    expected = _as_image(pixels["b.png"][:, ::-1].copy())
    torch.testing.assert_close(item["image_mirror"], expected, rtol=0, atol=1e-6)
    assert torch.equal(item["image_mirror"][:, :, 0], item["image"][:, :, -1])
    assert torch.equal(item["camera_mirror"], mirror_label(item["camera"]))
    # physically: the mirrored camera is the camera at the opposite yaw
    torch.testing.assert_close(item["camera_mirror"], camera_label(-_yaw(1), 0.05)[0], rtol=0, atol=1e-5)


def test_confidence_maps_exact_at_256_and_mirrored(tmp_path: Path) -> None:
    make_dataset(tmp_path, ["a.png", "b.png"], size=8, conf=True)
    ds = FaceDataset(tmp_path, resolution=256, mirror=True, confidence_maps=True)
    item = ds[1]
    assert item["confidence"].shape == (1, 256, 256) and item["confidence"].dtype == torch.float32
    assert torch.equal(item["confidence"][0], torch.from_numpy(_conf(1)))
    assert torch.equal(item["confidence_mirror"][0], torch.from_numpy(np.ascontiguousarray(_conf(1)[:, ::-1])))
    # the stored map grows left → right; the mirrored one right → left
    assert item["confidence_mirror"][0, 0, 0] > item["confidence_mirror"][0, 0, -1]


def test_confidence_maps_resized_and_without_mirror(tmp_path: Path) -> None:
    make_dataset(tmp_path, ["a.png"], size=32, conf=True)
    item = FaceDataset(tmp_path, resolution=32, mirror=True, confidence_maps=True)[0]
    assert item["confidence"].shape == (1, 32, 32)
    assert torch.equal(item["confidence_mirror"], item["confidence"].flip(-1))
    plain = FaceDataset(tmp_path, resolution=32, confidence_maps=True)[0]
    assert "confidence" in plain and "confidence_mirror" not in plain and "image_mirror" not in plain
    # maps are not read unless asked for
    assert "confidence" not in FaceDataset(tmp_path, resolution=32, mirror=True)[0]


# ------------------------------------------------------------------------------------------------------------
# Splits


def test_splits_are_deterministic_disjoint_and_cover(tmp_path: Path) -> None:
    names = [f"img{i:02d}.png" for i in range(20)]
    make_dataset(tmp_path, names, size=4)
    train = FaceDataset(tmp_path, resolution=4, split="train", val_fraction=0.3, seed=1)
    val = FaceDataset(tmp_path, resolution=4, split="val", val_fraction=0.3, seed=1)
    assert set(train.files).isdisjoint(val.files)
    assert sorted(train.files + val.files) == names
    assert 0 < len(val) < 20
    again = FaceDataset(tmp_path, resolution=4, split="val", val_fraction=0.3, seed=1)
    assert again.files == val.files
    others = {tuple(FaceDataset(tmp_path, resolution=4, split="val", val_fraction=0.3, seed=s).files) for s in range(4)}
    assert len(others) > 1  # the seed matters
    assert len(FaceDataset(tmp_path, resolution=4, split="all", val_fraction=0.3)) == 20


def test_mirror_copies_stay_with_their_original(tmp_path: Path) -> None:
    names = [f"{i:03d}{suffix}.png" for i in range(12) for suffix in ("", "_mirror")]
    make_dataset(tmp_path, names, size=4)
    val = FaceDataset(tmp_path, resolution=4, split="val", val_fraction=0.4, seed=3)
    groups = {split_group(n) for n in val.files}
    assert sorted(val.files) == sorted(n for n in names if split_group(n) in groups)
    assert len(val) % 2 == 0 and len(val) > 0


def test_explicit_val_names(tmp_path: Path) -> None:
    names = ["a.png", "a_mirror.png", "b.png", "c.jpg"]
    make_dataset(tmp_path, names, size=4)
    val = FaceDataset(tmp_path, resolution=4, split="val", val_names=["a", "c.jpg"])
    assert val.files == ["a.png", "a_mirror.png", "c.jpg"]
    assert FaceDataset(tmp_path, resolution=4, split="train", val_names=["a", "c.jpg"]).files == ["b.png"]
    with pytest.raises(DatasetError, match=r"val_names are not images.*'zzz'"):
        FaceDataset(tmp_path, resolution=4, split="val", val_names=["zzz", "a"])


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.text("abc_/xyz019", min_size=1, max_size=8).map(lambda s: s + ".png"), unique=True, max_size=30),
    st.floats(0.0, 0.99),
    st.integers(0, 10),
)
def test_split_names_partition_and_stability(names: list[str], fraction: float, seed: int) -> None:
    train, val = split_names(names, fraction, seed)
    assert sorted(train + val) == sorted(names)
    assert set(train).isdisjoint(val)
    assert (train, val) == split_names(names, fraction, seed)
    assert not {split_group(n) for n in val} & {split_group(n) for n in train}  # mirrors stay together
    if fraction > 0 and len({split_group(n) for n in names}) > 1:
        assert val  # at least one validation group


def test_split_is_stable_when_the_dataset_grows() -> None:
    names = [f"{i:05d}.png" for i in range(200)]
    train, val = split_names(names, 0.3, seed=4)
    assert 30 < len(val) < 90
    more_train, more_val = split_names([*names, *(f"new{i}.png" for i in range(50))], 0.3, seed=4)
    assert set(train) <= set(more_train) and set(val) <= set(more_val)
    assert split_names(names, 0.3, seed=5) != (train, val)


# ------------------------------------------------------------------------------------------------------------
# Zip datasets


def test_zip_dataset_matches_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ds"
    make_dataset(folder, ["a.png", "sub/b.png"], size=8, conf=True, conf_size=8)
    archive = _zip_folder(folder, tmp_path / "ds.zip")
    zipped = FaceDataset(archive, resolution=8, mirror=True, confidence_maps=True)
    plain = FaceDataset(folder, resolution=8, mirror=True, confidence_maps=True)
    assert zipped.files == plain.files
    for index in range(len(plain)):
        a, b = zipped[index], plain[index]
        assert a["name"] == b["name"]
        for key in ("image", "camera", "image_mirror", "camera_mirror", "confidence", "confidence_mirror"):
            assert torch.equal(a[key], b[key]), key
    clone = pickle.loads(pickle.dumps(zipped))  # what DataLoader workers receive under spawn
    assert torch.equal(clone[0]["image"], plain[0]["image"])
    zipped.close()


def test_zip_errors(tmp_path: Path) -> None:
    folder = tmp_path / "ds"
    make_dataset(folder, ["a.png"], size=4)
    (folder / "dataset.json").unlink()
    with pytest.raises(DatasetError, match=r"no dataset\.json"):
        FaceDataset(_zip_folder(folder, tmp_path / "x.zip"))
    (tmp_path / "bad.zip").write_bytes(b"not a zip at all")
    with pytest.raises(DatasetError, match="not a readable zip"):
        FaceDataset(tmp_path / "bad.zip")
    (tmp_path / "labels.txt").write_text("x")
    with pytest.raises(DatasetError, match="is a file, not a dataset folder"):
        FaceDataset(tmp_path / "labels.txt")
    broken = tmp_path / "broken"
    make_dataset(broken, ["a.png"], size=4)
    (broken / "dataset.json").write_text('{"labels": 5}')
    with pytest.raises(CameraError, match=r"broken2\.zip:dataset\.json"):
        FaceDataset(_zip_folder(broken, tmp_path / "broken2.zip"))


# ------------------------------------------------------------------------------------------------------------
# Errors


def test_missing_folder_and_dataset_json(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        FaceDataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"has no dataset\.json"):
        FaceDataset(tmp_path / "empty")


def test_malformed_dataset_json_is_a_camera_error(tmp_path: Path) -> None:
    make_dataset(tmp_path, ["a.png"], size=4)
    (tmp_path / "dataset.json").write_text('{"labels": [["a.png", [1, 2, 3]]]}')
    with pytest.raises(CameraError, match="expected 25"):
        FaceDataset(tmp_path)


def test_listed_image_missing(tmp_path: Path) -> None:
    listed = ["a.png", "gone1.png", "gone2.png", "gone3.png", "gone4.png", "notes.txt"]
    make_dataset(tmp_path, ["a.png"], size=4, labels=listed)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DatasetError) as info:
        FaceDataset(tmp_path)
    message = str(info.value)
    assert "dataset.json lists 5 image(s) not found" in message
    assert "'gone1.png', 'gone2.png', 'gone3.png' and 2 more" in message
    assert "'notes.txt' exist but are not" in message
    assert "\n" not in message


def test_image_without_label(tmp_path: Path) -> None:
    make_dataset(tmp_path, ["a.png"], size=4)
    Image.fromarray(_pixels(5, 4)).save(tmp_path / "extra.png")
    (tmp_path / "sub").mkdir()
    Image.fromarray(_pixels(6, 4)).save(tmp_path / "sub" / "extra2.jpg")
    # hidden files, conf_map contents and non-images are ignored
    Image.fromarray(_pixels(7, 4)).save(tmp_path / ".hidden.png")
    (tmp_path / "conf_map").mkdir()
    Image.fromarray(_pixels(8, 4)).save(tmp_path / "conf_map" / "vis.png")
    with pytest.raises(
        DatasetError, match=r"2 image\(s\) in .* have no camera in dataset.json: 'extra.png', 'sub/extra2"
    ):
        FaceDataset(tmp_path)


def test_unreadable_image_fails_on_load(tmp_path: Path) -> None:
    make_dataset(tmp_path, ["a.png", "b.png"], size=4)
    (tmp_path / "b.png").write_bytes(b"\x89PNG garbage")
    ds = FaceDataset(tmp_path, resolution=4)  # construction does not decode images
    ds[0]
    with pytest.raises(DatasetError, match=r"dataset image .*b\.png is unreadable \(not a readable image"):
        ds[1]
    folder = tmp_path
    archive = _zip_folder(folder, tmp_path.parent / f"{tmp_path.name}.zip")
    with pytest.raises(DatasetError, match=r"\.zip:b\.png is unreadable \(not a readable image"):
        FaceDataset(archive, resolution=4)[1]


def test_confidence_map_errors(tmp_path: Path) -> None:
    make_dataset(tmp_path, ["a.png", "b.png", "c.png"], size=4, conf=True, conf_size=4)
    (tmp_path / "conf_map" / "b.npy").unlink()
    (tmp_path / "conf_map" / "c.npy").unlink()
    with pytest.raises(DatasetError, match=r"2 confidence map\(s\) missing .*'conf_map/b.npy', 'conf_map/c.npy'"):
        FaceDataset(tmp_path, confidence_maps=True)
    FaceDataset(tmp_path)  # fine without conf maps

    np.save(tmp_path / "conf_map" / "b.npy", np.ones((4, 4), np.float32))
    np.save(tmp_path / "conf_map" / "c.npy", np.ones((4, 4), np.float32))
    np.save(tmp_path / "conf_map" / "a.npy", np.ones((4, 4), np.float64))
    with pytest.raises(DatasetError, match=r"a\.npy has dtype float64, expected float32"):
        FaceDataset(tmp_path, confidence_maps=True)  # the first map's header is checked at construction
    (tmp_path / "conf_map" / "a.npy").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=r"a\.npy is not a \.npy array"):
        FaceDataset(tmp_path, confidence_maps=True)

    np.save(tmp_path / "conf_map" / "a.npy", np.ones((4, 4), np.float32))
    np.save(tmp_path / "conf_map" / "b.npy", np.ones((1, 4, 4), np.float32))
    bad = np.ones((4, 4), np.float32)
    bad[1, 2] = np.nan
    np.save(tmp_path / "conf_map" / "c.npy", bad)
    ds = FaceDataset(tmp_path, resolution=4, confidence_maps=True)
    ds[0]
    with pytest.raises(DatasetError, match=r"b\.npy has shape \(1, 4, 4\), expected \(H, W\)"):
        ds[1]
    with pytest.raises(DatasetError, match=r"c\.npy has NaN/inf or negative values"):
        ds[2]


def test_confidence_map_stem_clash(tmp_path: Path) -> None:
    make_dataset(tmp_path, ["x/a.png", "y/a.png"], size=4, conf=True, conf_size=4)
    with pytest.raises(DatasetError, match="share the stem"):
        FaceDataset(tmp_path, confidence_maps=True)


def test_empty_split_and_bad_arguments(tmp_path: Path) -> None:
    make_dataset(tmp_path, ["a.png", "b.png"], size=4)
    with pytest.raises(DatasetError, match=r"the 'val' split of .* is empty"):
        FaceDataset(tmp_path, split="val")
    with pytest.raises(DatasetError, match=r"the 'train' split of .* is empty"):
        FaceDataset(tmp_path, split="train", val_names=["a.png", "b.png"])
    for kwargs in ({"resolution": 0}, {"split": "test"}, {"val_fraction": 1.0}, {"val_names": "a.png"}):
        with pytest.raises(ConfigError):
            FaceDataset(tmp_path, **kwargs)
    with pytest.raises(ConfigError, match="not both"):
        FaceDataset(tmp_path, split="val", val_fraction=0.5, val_names=["a"])


# ------------------------------------------------------------------------------------------------------------
# Loader


def _order(loader: torch.utils.data.DataLoader, epochs: int = 2) -> list[list[str]]:
    return [[name for batch in loader for name in batch["name"]] for _ in range(epochs)]


def test_loader_batches_and_same_seed_same_order(tmp_path: Path) -> None:
    make_dataset(tmp_path, [f"{i}.png" for i in range(10)], size=4)
    ds = FaceDataset(tmp_path, resolution=4, mirror=True)
    batch = next(iter(make_loader(ds, batch_size=4, seed=0)))
    assert batch["image"].shape == (4, 3, 4, 4) and batch["camera_mirror"].shape == (4, 25)
    assert isinstance(batch["name"], list) and len(batch["name"]) == 4

    first = _order(make_loader(ds, batch_size=3, shuffle=True, seed=5, drop_last=True))
    second = _order(make_loader(ds, batch_size=3, shuffle=True, seed=5, drop_last=True))
    assert first == second
    assert all(len(epoch) == 9 for epoch in first)  # drop_last
    assert first[0] != first[1]  # a new epoch reshuffles
    assert first != _order(make_loader(ds, batch_size=3, shuffle=True, seed=6, drop_last=True))
    in_order = _order(make_loader(ds, batch_size=4, shuffle=False, drop_last=False), epochs=1)[0]
    assert in_order == ds.names


class _RandomDraws(torch.utils.data.Dataset):
    """Returns numpy/torch random numbers, to check the worker seeding."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor([float(np.random.rand()), float(torch.rand(()))])


def test_loader_workers_are_seeded_from_the_seed(tmp_path: Path) -> None:
    def draws(seed: int) -> torch.Tensor:
        loader = make_loader(_RandomDraws(), batch_size=2, shuffle=True, workers=2, seed=seed)
        return torch.cat(list(loader))

    a, b = draws(11), draws(11)
    assert torch.equal(a, b)
    assert not torch.equal(a, draws(12))
    assert len(set(a[:, 0].tolist())) == 8  # the workers do not repeat each other's numpy streams


def test_loader_with_zip_workers(tmp_path: Path) -> None:
    folder = tmp_path / "ds"
    make_dataset(folder, [f"{i}.png" for i in range(6)], size=4)
    zipped = FaceDataset(_zip_folder(folder, tmp_path / "ds.zip"), resolution=4)
    zipped[0]  # opens the zip handle in this process before the workers start
    serial = [b["image"] for b in make_loader(zipped, batch_size=2, shuffle=False, drop_last=False)]
    parallel = [b["image"] for b in make_loader(zipped, batch_size=2, shuffle=False, workers=2, drop_last=False)]
    assert all(torch.equal(x, y) for x, y in zip(serial, parallel, strict=True))


def test_distributed_loader(tmp_path: Path) -> None:
    make_dataset(tmp_path, [f"{i}.png" for i in range(10)], size=4)
    ds = FaceDataset(tmp_path, resolution=4)
    shards = []
    for rank in range(2):
        loader = make_loader(ds, batch_size=2, seed=3, distributed=True, rank=rank, world_size=2, drop_last=False)
        assert isinstance(loader.sampler, torch.utils.data.DistributedSampler)
        loader.sampler.set_epoch(0)
        shards.append([n for batch in loader for n in batch["name"]])
    assert set(shards[0]).isdisjoint(shards[1])
    assert sorted(shards[0] + shards[1]) == sorted(ds.names)
    again = make_loader(ds, batch_size=2, seed=3, distributed=True, rank=0, world_size=2, drop_last=False)
    assert [n for batch in again for n in batch["name"]] == shards[0]
    with pytest.raises(ConfigError, match="process group"):
        make_loader(ds, batch_size=2, distributed=True)


def test_loader_errors(tmp_path: Path) -> None:
    make_dataset(tmp_path, ["a.png", "b.png"], size=4)
    ds = FaceDataset(tmp_path, resolution=4)
    with pytest.raises(DatasetError, match="only 2 item"):
        make_loader(ds, batch_size=3, drop_last=True)
    assert len(make_loader(ds, batch_size=3, drop_last=False)) == 1
    with pytest.raises(DatasetError, match="only 1 item"):
        make_loader(ds, batch_size=2, distributed=True, rank=0, world_size=2, drop_last=True)
    for kwargs in ({"batch_size": 0}, {"batch_size": 1, "workers": -1}):
        with pytest.raises(ConfigError):
            make_loader(ds, **kwargs)
