"""The delivery benchmark's package: a real signed LightGBM package, padded to a size.

A small LightGBM classifier (scikit-learn's breast-cancer data) is saved as an MLflow
model folder; a file of random bytes (`padding.bin`, incompressible, so the zip grows by
as much) is added to that folder before `build_package`, so the manifest lists it with its
checksum and every device hashes it when verifying, and the package's own `score.py`
still answers the smoke prediction.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from modelferry.packaging import BuiltPackage, PackageInputs, SigningKey, build_package

PACKAGE_ID = "bench-delivery"
MODEL_NAME = "bench-delivery-lightgbm"
PADDING_FILE = "padding.bin"
MIB = 1024 * 1024


@dataclass(frozen=True)
class BenchPackage:
    """The built package and the key the devices trust."""

    built: BuiltPackage
    signer: SigningKey
    padding_bytes: int

    @property
    def public_key(self) -> str:
        """The verify key, base64, as `modelferry agent --public-key` takes it."""
        return self.signer.verify_key.public_base64


def build_bench_package(folder: Path, size_mib: float, version: str = "1") -> BenchPackage:
    """Train, save and package the model under `folder`, the zip at least `size_mib` MiB."""
    model_dir = folder / "model"
    _save_model(model_dir)
    signer = SigningKey.generate()
    inputs = PackageInputs(
        package_id=PACKAGE_ID,
        version=version,
        model_dir=model_dir,
        model_name=MODEL_NAME,
        model_version=version,
        run_id=None,
        dataset_digest=None,
        created_at=datetime(2026, 11, 1, tzinfo=UTC),
        class_names=("malignant", "benign"),
    )
    bare = build_package(inputs, signer, folder / "bare")
    padding = max(int(size_mib * MIB) - bare.size, 0)
    # Random bytes do not deflate: the zip grows by the padding plus a few block headers.
    (model_dir / PADDING_FILE).write_bytes(random.Random(0).randbytes(padding))
    built = build_package(inputs, signer, folder / "package")
    return BenchPackage(built, signer, padding)


def _save_model(model_dir: Path) -> None:
    import warnings

    import lightgbm as lgb
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    model = lgb.LGBMClassifier(n_estimators=20, num_leaves=15, verbose=-1).fit(x, y)
    sample = x.head(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.lightgbm.save_model(
            model,
            str(model_dir),
            signature=infer_signature(sample, model.predict(sample)),
            input_example=sample,
        )
