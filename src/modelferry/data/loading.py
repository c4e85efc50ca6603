"""`load_dataset`: from a data config to a validated `Dataset`."""

from __future__ import annotations

from modelferry.config import DataConfig
from modelferry.data.dataset import Dataset
from modelferry.data.sources import read_source, source_uri
from modelferry.data.validation import prepare_frame


def load_dataset(config: DataConfig) -> Dataset:
    """Read the configured data, validate it and encode its labels as 0/1.

    Args:
        config: The data section of the model config.

    Returns:
        The dataset, with its content digest and schema.

    Raises:
        DataError: the source cannot be read, or its data cannot train a binary
            classifier; the message says what is wrong and what to do.
    """
    uri = source_uri(config.source)
    frame = prepare_frame(read_source(config.source, config.label_column), config, uri)
    return Dataset.from_frame(frame, config.label_column, config.class_names, uri)
