"""Data layer: image readers/writers, 2D transforms and datasets (3D lives in volume_*)."""

from revgan.data.datasets import (
    DATASET_MODES,
    AlignedDataset,
    SingleDataset,
    UnalignedDataset,
    create_dataset,
    seed_worker,
)
from revgan.data.images import (
    IMAGE_EXTENSIONS,
    ImageMeta,
    list_images,
    read_image,
    to_channels,
    write_image,
)
from revgan.data.transforms import PREPROCESS_MODES, apply_transform, get_params, pad_to_multiple

__all__ = [
    "DATASET_MODES",
    "IMAGE_EXTENSIONS",
    "PREPROCESS_MODES",
    "AlignedDataset",
    "ImageMeta",
    "SingleDataset",
    "UnalignedDataset",
    "apply_transform",
    "create_dataset",
    "get_params",
    "list_images",
    "pad_to_multiple",
    "read_image",
    "seed_worker",
    "to_channels",
    "write_image",
]
