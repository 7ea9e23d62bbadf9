"""Reading and writing images, label images, COCO JSON (datasets and results lists), overlays,
ImageJ ROI sets and QuPath GeoJSON (all writes are atomic)."""

from zeusseg.io.atomic import atomic_path
from zeusseg.io.coco import CocoDataset, read_coco, write_coco_predictions
from zeusseg.io.coco_results import read_coco_results
from zeusseg.io.geojson import write_geojson
from zeusseg.io.imagej_rois import write_imagej_rois
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
    "read_coco_results",
    "read_image",
    "read_label_folder",
    "read_label_image",
    "write_coco_predictions",
    "write_geojson",
    "write_imagej_rois",
    "write_label_tiff",
    "write_overlay",
]
