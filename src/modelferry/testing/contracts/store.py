"""The contract every `PackageStore` keeps, as one test suite for all of them.

Subclass `PackageStoreContract` in a `Test...` class and provide a `store` fixture: the
`PackageStore` under test. Every test puts its own package ids, so a store may be shared.

A link is downloaded by `fetch()`: an HTTP GET, or reading the file at a `file://` URL's
path; override it for a server whose certificate needs trusting.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import httpx
import pytest

from modelferry.errors import PackageStoreError
from modelferry.stores.base import PackageStore, StoredPackage

MakePackage = Callable[..., Path]


class PackageStoreContract:
    """Shared tests; not collected by itself (no `Test` prefix)."""

    def fetch(self, url: str) -> bytes:
        """The bytes a device gets from a link."""
        if url.startswith("file://"):
            return Path(url2pathname(urlparse(url).path)).read_bytes()
        response = httpx.get(url, timeout=30)
        response.raise_for_status()
        return response.content

    @pytest.fixture
    def package_id(self) -> str:
        """A package id no other test uses, so that a store may be shared."""
        return f"pkg-{uuid.uuid4().hex[:12]}"

    @pytest.fixture
    def make_package(self, tmp_path: Path) -> MakePackage:
        """Writes a package file: `make_package(b"bytes", name="p.zip")`."""

        def make(content: bytes, name: str = "package.zip") -> Path:
            folder = tmp_path / uuid.uuid4().hex
            folder.mkdir()
            path = folder / name
            path.write_bytes(content)
            return path

        return make

    def test_put_returns_the_record(
        self, store: PackageStore, package_id: str, make_package: MakePackage
    ) -> None:
        content = b"PK\x03\x04 package one" * 1000
        record = store.put(make_package(content, "churn-1.zip"), package_id=package_id, version="1")
        assert record == StoredPackage(
            package_id=package_id,
            version="1",
            key=f"{package_id}/1/churn-1.zip",
            size=len(content),
            sha256=_sha256(content),
        )
        assert store.get(package_id, "1") == record

    def test_get_of_unknown_package_is_none(self, store: PackageStore, package_id: str) -> None:
        assert store.get(package_id, "1") is None

    def test_putting_the_same_bytes_again_returns_the_same_record(
        self, store: PackageStore, package_id: str, make_package: MakePackage
    ) -> None:
        first = store.put(make_package(b"same bytes"), package_id=package_id, version="1")
        again = store.put(make_package(b"same bytes"), package_id=package_id, version="1")
        renamed = store.put(
            make_package(b"same bytes", "other-name.zip"), package_id=package_id, version="1"
        )
        assert again == first
        assert renamed == first

    def test_different_bytes_for_a_published_version_are_refused(
        self, store: PackageStore, package_id: str, make_package: MakePackage
    ) -> None:
        original = store.put(make_package(b"original"), package_id=package_id, version="1")
        with pytest.raises(PackageStoreError, match="different bytes") as refused:
            store.put(make_package(b"tampered"), package_id=package_id, version="1")
        assert package_id in str(refused.value)
        with pytest.raises(PackageStoreError, match="different bytes"):
            store.put(make_package(b"tampered", "renamed.zip"), package_id=package_id, version="1")
        assert store.get(package_id, "1") == original
        assert self.fetch(store.link(original)) == b"original"

    def test_concurrent_puts_of_the_same_bytes_agree(
        self, store: PackageStore, package_id: str, make_package: MakePackage
    ) -> None:
        files = [make_package(b"raced bytes" * 5000) for _ in range(4)]
        with ThreadPoolExecutor(4) as pool:
            records = list(
                pool.map(lambda f: store.put(f, package_id=package_id, version="1"), files)
            )
        assert len(set(records)) == 1
        assert self.fetch(store.link(records[0])) == b"raced bytes" * 5000

    def test_concurrent_puts_of_different_bytes_publish_exactly_one(
        self, store: PackageStore, package_id: str, make_package: MakePackage
    ) -> None:
        contents = [f"variant {i}".encode() * 5000 for i in range(4)]
        files = [make_package(content) for content in contents]

        def put(path: Path) -> StoredPackage | PackageStoreError:
            try:
                return store.put(path, package_id=package_id, version="1")
            except PackageStoreError as exc:
                return exc

        with ThreadPoolExecutor(4) as pool:
            outcomes = list(pool.map(put, files))
        winners = {o for o in outcomes if isinstance(o, StoredPackage)}
        assert len(winners) == 1
        winner = winners.pop()
        assert store.get(package_id, "1") == winner
        assert self.fetch(store.link(winner)) in contents

    def test_a_link_downloads_the_same_bytes(
        self, store: PackageStore, package_id: str, make_package: MakePackage
    ) -> None:
        content = bytes(range(256)) * 4096  # 1 MiB, every byte value
        record = store.put(make_package(content), package_id=package_id, version="1")
        assert self.fetch(store.link(record)) == content

    def test_each_version_links_to_its_own_bytes(
        self, store: PackageStore, package_id: str, make_package: MakePackage
    ) -> None:
        one = store.put(make_package(b"version one"), package_id=package_id, version="1")
        two = store.put(make_package(b"version two"), package_id=package_id, version="2")
        assert self.fetch(store.link(one)) == b"version one"
        assert self.fetch(store.link(two)) == b"version two"

    def test_every_call_gives_a_working_link(
        self, store: PackageStore, package_id: str, make_package: MakePackage
    ) -> None:
        record = store.put(make_package(b"linked"), package_id=package_id, version="1")
        links = [store.link(record) for _ in range(3)]
        assert len(set(links)) == len(links)
        assert all(self.fetch(link) == b"linked" for link in links)

    def test_a_link_to_an_unknown_package_is_refused(
        self, store: PackageStore, package_id: str
    ) -> None:
        ghost = StoredPackage(package_id, "1", f"{package_id}/1/ghost.zip", 1, "0" * 64)
        with pytest.raises(PackageStoreError, match="not in"):
            store.link(ghost)

    def test_a_link_needs_a_positive_expiry(
        self, store: PackageStore, package_id: str, make_package: MakePackage
    ) -> None:
        record = store.put(make_package(b"x"), package_id=package_id, version="1")
        with pytest.raises(PackageStoreError, match="expire"):
            store.link(record, expires_in=timedelta(0))

    def test_delete_removes_only_that_version(
        self, store: PackageStore, package_id: str, make_package: MakePackage
    ) -> None:
        one = store.put(make_package(b"one"), package_id=package_id, version="1")
        two = store.put(make_package(b"two"), package_id=package_id, version="2")
        store.delete(package_id, "1")
        assert store.get(package_id, "1") is None
        assert store.get(package_id, "2") == two
        with pytest.raises(PackageStoreError, match="not in"):
            store.link(one)
        assert self.fetch(store.link(two)) == b"two"

    def test_deleting_what_does_not_exist_succeeds(
        self, store: PackageStore, package_id: str, make_package: MakePackage
    ) -> None:
        store.delete(package_id, "1")
        store.put(make_package(b"x"), package_id=package_id, version="1")
        store.delete(package_id, "1")
        store.delete(package_id, "1")
        assert store.get(package_id, "1") is None

    def test_a_deleted_version_can_be_put_again(
        self, store: PackageStore, package_id: str, make_package: MakePackage
    ) -> None:
        store.put(make_package(b"first"), package_id=package_id, version="1")
        store.delete(package_id, "1")
        again = store.put(make_package(b"second"), package_id=package_id, version="1")
        assert self.fetch(store.link(again)) == b"second"

    def test_a_stale_record_gets_no_link(
        self, store: PackageStore, package_id: str, make_package: MakePackage
    ) -> None:
        old = store.put(make_package(b"old bytes"), package_id=package_id, version="1")
        store.delete(package_id, "1")
        store.put(make_package(b"new, longer bytes"), package_id=package_id, version="1")
        with pytest.raises(PackageStoreError):
            store.link(old)

    def test_a_missing_file_is_refused(
        self, store: PackageStore, package_id: str, tmp_path: Path
    ) -> None:
        with pytest.raises(PackageStoreError, match="does not exist"):
            store.put(tmp_path / "nothing.zip", package_id=package_id, version="1")
        assert store.get(package_id, "1") is None

    @pytest.mark.parametrize(
        ("package_id_", "version", "name"),
        [
            ("..", "1", "p.zip"),
            ("a/b", "1", "p.zip"),
            ("ok", "", "p.zip"),
            ("ok", "../1", "p.zip"),
            ("ok", "1", ".hidden.zip"),
        ],
    )
    def test_unsafe_names_are_refused(
        self,
        store: PackageStore,
        make_package: MakePackage,
        package_id_: str,
        version: str,
        name: str,
    ) -> None:
        with pytest.raises(PackageStoreError, match="cannot name a stored package"):
            store.put(make_package(b"x", name), package_id=package_id_, version=version)

    def test_a_record_whose_key_names_another_package_is_refused(
        self, store: PackageStore, package_id: str, make_package: MakePackage
    ) -> None:
        record = store.put(make_package(b"x"), package_id=package_id, version="1")
        forged = StoredPackage(package_id, "2", record.key, record.size, record.sha256)
        with pytest.raises(PackageStoreError, match="does not belong"):
            store.link(forged)


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()
