"""The data layer: load a configured source into a validated, digested `Dataset`.

Names are imported on first use, so importing `modelferry.data.masking` does not load pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelferry.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from modelferry.data.dataset import Dataset, compute_digest
    from modelferry.data.loading import load_dataset
    from modelferry.data.masking import mask_url

__all__ = ["Dataset", "compute_digest", "load_dataset", "mask_url"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Dataset": "dataset",
        "compute_digest": "dataset",
        "load_dataset": "loading",
        "mask_url": "masking",
    },
)
