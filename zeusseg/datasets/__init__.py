"""Named datasets (the shared microscopy data) found through a configurable data root."""

from zeusseg.datasets.registry import (
    DATASETS,
    DatasetSpec,
    Sample,
    get_dataset,
    list_datasets,
    resolve_data_root,
)

__all__ = ["DATASETS", "DatasetSpec", "Sample", "get_dataset", "list_datasets", "resolve_data_root"]
