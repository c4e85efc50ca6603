"""The data layer: load a configured source into a validated, digested `Dataset`."""

from __future__ import annotations

from modelferry.data.dataset import Dataset, compute_digest
from modelferry.data.loading import load_dataset
from modelferry.data.masking import mask_url

__all__ = ["Dataset", "compute_digest", "load_dataset", "mask_url"]
