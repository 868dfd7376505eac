"""Training data: the official face dataset layout (folder or EG3D zip) and a deterministic DataLoader."""

from triplanenet.data.dataset import (
    CONF_MAP_DIR,
    IMAGE_EXTENSIONS,
    DatasetError,
    FaceDataset,
    make_loader,
    split_group,
    split_names,
)

__all__ = [
    "CONF_MAP_DIR",
    "IMAGE_EXTENSIONS",
    "DatasetError",
    "FaceDataset",
    "make_loader",
    "split_group",
    "split_names",
]
