"""Reading and writing images, label images, COCO JSON and overlays (all writes are atomic)."""

from zeusseg.io.atomic import atomic_path
from zeusseg.io.coco import CocoDataset, read_coco, write_coco_predictions
from zeusseg.io.images import IMAGE_SUFFIXES, list_images, normalise_intensity, read_image
from zeusseg.io.labels import LABEL_SUFFIXES, read_label_folder, read_label_image, write_label_tiff
from zeusseg.io.overlay import write_overlay

__all__ = [
    "IMAGE_SUFFIXES",
    "LABEL_SUFFIXES",
    "CocoDataset",
    "atomic_path",
    "list_images",
    "normalise_intensity",
    "read_coco",
    "read_image",
    "read_label_folder",
    "read_label_image",
    "write_coco_predictions",
    "write_label_tiff",
    "write_overlay",
]
