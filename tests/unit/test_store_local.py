"""The local package store: the shared contract, plus what only a folder store does."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from urllib.request import url2pathname, urlopen

import pytest

from modelferry.errors import PackageStoreError
from modelferry.stores.local import DEFAULT_ROOT, LocalPackageStore
from modelferry.testing.contracts.store import PackageStoreContract


class TestLocalStoreContract(PackageStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> LocalPackageStore:
        return LocalPackageStore(tmp_path / "store")


@pytest.fixture
def store(tmp_path: Path) -> LocalPackageStore:
    return LocalPackageStore(tmp_path / "store")


@pytest.fixture
def package(tmp_path: Path) -> Path:
    path = tmp_path / "churn-3.zip"
    path.write_bytes(b"PK\x03\x04 churn model" * 100)
    return path


def test_embedded_default_root() -> None:
    assert LocalPackageStore().root == DEFAULT_ROOT == Path(".modelferry/packages")


def test_layout_is_id_version_file(store: LocalPackageStore, package: Path) -> None:
    store.put(package, package_id="churn", version="3")
    stored = store.root / "churn" / "3" / "churn-3.zip"
    assert stored.read_bytes() == package.read_bytes()
    assert sorted(p.name for p in stored.parent.iterdir()) == ["churn-3.zip"]


def test_link_is_a_file_url_stating_its_expiry(store: LocalPackageStore, package: Path) -> None:
    record = store.put(package, package_id="churn", version="3")
    before = datetime.now(UTC)
    url = urlsplit(store.link(record, expires_in=timedelta(minutes=2)))
    after = datetime.now(UTC)
    assert url.scheme == "file"
    assert url.path.endswith("/churn/3/churn-3.zip")
    with urlopen(f"file://{url.path}") as response:
        assert response.read() == package.read_bytes()
    (expires,) = parse_qs(url.query)["expires"]
    assert expires.endswith("Z")
    moment = datetime.fromisoformat(expires)
    assert before + timedelta(minutes=2) <= moment <= after + timedelta(minutes=2)


def test_a_short_link_after_a_long_one_states_its_own_expiry(
    store: LocalPackageStore, package: Path
) -> None:
    record = store.put(package, package_id="churn", version="3")
    long = urlsplit(store.link(record, expires_in=timedelta(days=1))).query
    short = urlsplit(store.link(record, expires_in=timedelta(seconds=1))).query
    long_expiry = datetime.fromisoformat(parse_qs(long)["expires"][0])
    short_expiry = datetime.fromisoformat(parse_qs(short)["expires"][0])
    assert short_expiry <= datetime.now(UTC) + timedelta(seconds=1)
    assert long_expiry - short_expiry > timedelta(hours=23)


def test_expiry_is_stated_not_enforced(store: LocalPackageStore, package: Path) -> None:
    # What a file:// link cannot do, written down: the file outlives the stated expiry.
    record = store.put(package, package_id="churn", version="3")
    url = urlsplit(store.link(record, expires_in=timedelta(microseconds=1)))
    time.sleep(0.01)
    assert Path(url2pathname(url.path)).read_bytes() == package.read_bytes()


def test_link_survives_a_relative_root(
    tmp_path: Path, package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = LocalPackageStore("relative/store")
    url = urlsplit(store.link(store.put(package, package_id="churn", version="3")))
    monkeypatch.chdir("/")
    assert Path(url2pathname(url.path)).read_bytes() == package.read_bytes()


def test_failed_write_leaves_nothing_behind(
    store: LocalPackageStore, package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(PackageStoreError, match="No space left") as failed:
        store.put(package, package_id="churn", version="3")
    assert "churn" in str(failed.value)
    monkeypatch.undo()
    assert store.get("churn", "3") is None
    assert list((store.root / "churn" / "3").iterdir()) == []  # no temporary file either
    assert store.put(package, package_id="churn", version="3").size == package.stat().st_size


def test_interrupted_write_is_invisible(store: LocalPackageStore, package: Path) -> None:
    # What a crash mid-copy leaves: a hidden temporary file and nothing published.
    folder = store.root / "churn" / "3"
    folder.mkdir(parents=True)
    (folder / ".churn-3.zip.0123.tmp").write_bytes(b"PK\x03\x04 half")
    assert store.get("churn", "3") is None
    record = store.put(package, package_id="churn", version="3")
    assert store.get("churn", "3") == record


def test_published_file_is_not_replaced_by_a_late_writer(
    store: LocalPackageStore, package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another writer publishes other bytes between our check and our link.
    other = tmp_path / "other.zip"
    other.write_bytes(b"other bytes")
    original_get = LocalPackageStore.get
    calls = {"n": 0}

    def get_missing_once(self: LocalPackageStore, package_id: str, version: str) -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            folder = self.root / package_id / version
            folder.mkdir(parents=True)
            (folder / package.name).write_bytes(other.read_bytes())
            return None
        return original_get(self, package_id, version)

    monkeypatch.setattr(LocalPackageStore, "get", get_missing_once)
    with pytest.raises(PackageStoreError, match="different bytes"):
        store.put(package, package_id="churn", version="3")
    assert (store.root / "churn" / "3" / package.name).read_bytes() == b"other bytes"
    assert [p.name for p in (store.root / "churn" / "3").iterdir()] == [package.name]


def test_delete_removes_empty_folders(store: LocalPackageStore, package: Path) -> None:
    store.put(package, package_id="churn", version="3")
    store.delete("churn", "3")
    assert not (store.root / "churn").exists()


def test_unwritable_root_is_a_store_error(tmp_path: Path, package: Path) -> None:
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("x")
    store = LocalPackageStore(blocker / "store")
    with pytest.raises(PackageStoreError, match="cannot write package churn version 3"):
        store.put(package, package_id="churn", version="3")


def test_repr_names_the_root(tmp_path: Path) -> None:
    assert repr(LocalPackageStore(tmp_path)) == f"LocalPackageStore(root={str(tmp_path)!r})"
