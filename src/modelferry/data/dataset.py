"""The validated, labelled table a model trains on, with a digest of its content."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import pandas as pd

# Bump when the digest recipe changes, so old and new digests never collide.
_DIGEST_VERSION = b"modelferry-dataset-digest-v1\n"


@dataclass(frozen=True, eq=False)
class Dataset:
    """A table of numeric features plus a 0/1 label column, ready to train on.

    Build one with `modelferry.data.load_dataset`, which validates the data first.

    Attributes:
        frame: Feature columns and the label column; labels are int 0/1.
        label_column: Name of the label column in `frame`.
        class_names: Names of label 0 and label 1, in that order.
        source_uri: Where the data came from, with any password masked.
        digest: SHA-256 hex digest of the content (see `compute_digest`).
        schema: Column name to dtype string, in column order.
    """

    # A frame's repr is long and its `==` is element-wise, so keep it out of both.
    frame: pd.DataFrame = field(repr=False)
    label_column: str
    class_names: tuple[str, str]
    source_uri: str
    digest: str
    schema: dict[str, str] = field(repr=False)

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        label_column: str,
        class_names: tuple[str, str],
        source_uri: str,
    ) -> Dataset:
        """Wrap an already validated frame, computing its digest and schema.

        Args:
            frame: Numeric features plus an int 0/1 label column.
            label_column: Name of the label column.
            class_names: Names of label 0 and label 1.
            source_uri: Where the data came from, password masked.

        Returns:
            The dataset.
        """
        return cls(
            frame=frame,
            label_column=label_column,
            class_names=class_names,
            source_uri=source_uri,
            digest=compute_digest(frame),
            schema={str(name): str(dtype) for name, dtype in frame.dtypes.items()},
        )

    @property
    def features(self) -> pd.DataFrame:
        """The feature columns, without the label."""
        return self.frame.drop(columns=[self.label_column])

    @property
    def labels(self) -> pd.Series[int]:
        """The label column as int 0/1."""
        return self.frame[self.label_column]

    @property
    def feature_names(self) -> list[str]:
        """Names of the feature columns, in column order."""
        return [str(name) for name in self.frame.columns if name != self.label_column]

    @property
    def row_count(self) -> int:
        """Number of rows."""
        return len(self.frame)


def compute_digest(frame: pd.DataFrame) -> str:
    """Return the SHA-256 hex digest of a frame's column names, dtypes and values.

    Row order matters; the index does not. pandas hashes values with a fixed key, so the
    digest is the same across processes, runs and machines.

    Args:
        frame: The table to digest.

    Returns:
        64 lowercase hex characters.
    """
    digest = hashlib.sha256(_DIGEST_VERSION)
    header = [[str(name), str(dtype)] for name, dtype in frame.dtypes.items()]
    digest.update(json.dumps(header, ensure_ascii=False).encode("utf-8"))
    digest.update(b"\n")
    row_hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    # Fix the byte order so the digest does not depend on the machine's endianness.
    digest.update(row_hashes.astype("<u8").tobytes())
    return digest.hexdigest()
