"""Training side of zeusseg: dense targets, prompted datasets, sampling, augmentation."""

from zeusseg.training.augment import AugmentConfig
from zeusseg.training.data import PromptedSegmentationDataset
from zeusseg.training.data_config import DEFAULT_DATA_CONFIG, data_config
from zeusseg.training.preload import PreloadedImage, Source, open_source, preload_source
from zeusseg.training.prompts import DEFAULT_PROMPTS, PromptTable
from zeusseg.training.sampling import BalancedSampler, image_weights
from zeusseg.training.targets import make_targets
from zeusseg.training.validation_set import ValidationItem, ValidationSet
from zeusseg.transforms import median_diameter, pad_to_multiple, rescale_factor

__all__ = [
    "AugmentConfig",
    "BalancedSampler",
    "DEFAULT_DATA_CONFIG",
    "DEFAULT_PROMPTS",
    "PreloadedImage",
    "PromptTable",
    "PromptedSegmentationDataset",
    "Source",
    "ValidationItem",
    "ValidationSet",
    "data_config",
    "image_weights",
    "make_targets",
    "median_diameter",
    "open_source",
    "pad_to_multiple",
    "preload_source",
    "rescale_factor",
]
