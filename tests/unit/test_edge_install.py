"""Installed versions on disk: atomic install, rollback, pruning, recovery, state file."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from modelferry.edge.install import (
    InstallError,
    current_version,
    install_version,
    prepare_root,
    rollback,
    staging_folder,
)
from modelferry.edge.state import (
    MAX_DELIVERY_RECORDS,
    DeliveryRecord,
    InstalledVersion,
    StateStore,
)


def stage(root: Path, version: str) -> Path:
    """A staged package folder as the agent leaves it after extraction."""
    folder = staging_folder(root) / "package"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "MLmodel").write_text("flavors: {}\n")
    manifest = {"package_id": "pkg", "version": version, "model": {"name": "m", "version": version}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def put(root: Path, version: str, keep: int = 3) -> InstalledVersion:
    entry = InstalledVersion("pkg", version, "m", version, f"d-{version}")
    outcome = install_version(root, stage(root, version), entry, keep=keep)
    return outcome.current


def on_disk(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "versions" / "pkg").iterdir())


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "edge"
    prepare_root(folder)
    return folder


def test_install_swaps_the_current_link_and_reports_the_previous(root: Path) -> None:
    first = install_version(root, stage(root, "1"), InstalledVersion("pkg", "1", "m", "1"))
    assert first.previous is None
    second = install_version(root, stage(root, "2"), InstalledVersion("pkg", "2", "m", "2"))

    assert second.previous is not None
    assert second.previous.version == "1"
    assert os.readlink(root / "current") == "versions/pkg/2"
    assert (root / "current" / "model" / "MLmodel").is_file()
    assert [e.version for e in StateStore(root).read().history] == ["1", "2"]
    assert second.current.installed_at.endswith("Z")
    # No temporary link is left beside `current`.
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".current")) == []


def test_only_the_newest_versions_are_kept(root: Path) -> None:
    for version in ("1", "2", "3", "4"):
        put(root, version, keep=2)

    assert on_disk(root) == ["3", "4"]
    assert [e.version for e in StateStore(root).read().history] == ["3", "4"]
    assert not (root / "trash").exists() or not any((root / "trash").iterdir())


def test_installing_the_current_version_again_is_refused(root: Path) -> None:
    put(root, "1")

    with pytest.raises(InstallError, match="already the current version"):
        install_version(root, stage(root, "1"), InstalledVersion("pkg", "1"))
    assert os.readlink(root / "current") == "versions/pkg/1"


def test_rollback_goes_back_one_version_at_a_time(root: Path) -> None:
    for version in ("1", "2", "3"):
        put(root, version)

    assert rollback(root).current.version == "2"
    assert rollback(root).current.version == "1"
    assert on_disk(root) == ["1"]
    assert current_version(root) == StateStore(root).read().history[-1]
    with pytest.raises(InstallError, match="no version before pkg/1"):
        rollback(root)


def test_rollback_with_nothing_installed_says_so(root: Path) -> None:
    with pytest.raises(InstallError, match="nothing is installed"):
        rollback(root)


def test_a_rolled_back_version_can_be_installed_again(root: Path) -> None:
    put(root, "1")
    put(root, "2")
    rollback(root)

    outcome = install_version(root, stage(root, "2"), InstalledVersion("pkg", "2"))

    assert outcome.previous is not None
    assert outcome.previous.version == "1"
    assert os.readlink(root / "current") == "versions/pkg/2"


def test_prepare_root_clears_leftovers_and_repairs_the_history(root: Path) -> None:
    put(root, "1")
    stage(root, "half-extracted")
    # A crash after the link swap, before the state was written.
    manual = root / "versions" / "pkg" / "7"
    manual.mkdir()
    (manual / "manifest.json").write_text(json.dumps({"model": {"name": "m", "version": "7"}}))
    os.symlink("versions/pkg/7", root / ".current.tmp")
    os.replace(root / ".current.tmp", root / "current")

    prepare_root(root)

    assert list((root / "staging").iterdir()) == []
    history = StateStore(root).read().history
    assert [(e.version, e.model_version) for e in history] == [("1", "1"), ("7", "7")]
    assert rollback(root).current.version == "1"


def test_a_corrupt_state_file_is_set_aside(root: Path) -> None:
    (root / "state.json").write_text("{not json")

    state = StateStore(root).read()

    assert state.deliveries == {}
    assert state.history == []
    assert (root / "state.json.corrupt").read_text() == "{not json"


def test_old_finished_deliveries_are_forgotten_first(root: Path) -> None:
    store = StateStore(root)
    with store.update() as state:
        state.record(DeliveryRecord("pending", "p", "pkg", "1", "Received"))
        for number in range(MAX_DELIVERY_RECORDS + 5):
            state.record(DeliveryRecord(f"d-{number}", "p", "pkg", "1", "Success"))

    saved = store.read()
    assert len(saved.deliveries) == MAX_DELIVERY_RECORDS
    assert "pending" in saved.deliveries
    assert "d-0" not in saved.deliveries
    assert [r.delivery_id for r in saved.pending()] == ["pending"]


def test_a_failed_update_writes_nothing(root: Path) -> None:
    store = StateStore(root)
    with store.update() as state:
        state.record(DeliveryRecord("d-1", "p", "pkg", "1", "Received"))

    def fail_midway() -> None:
        with store.update() as state:
            state.record(DeliveryRecord("d-2", "p", "pkg", "1", "Received"))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        fail_midway()

    assert list(store.read().deliveries) == ["d-1"]


def test_a_current_version_deleted_by_hand_counts_as_nothing_installed(root: Path) -> None:
    put(root, "1")
    shutil.rmtree(root / "versions" / "pkg" / "1")

    assert current_version(root) is None
    outcome = install_version(root, stage(root, "1"), InstalledVersion("pkg", "1"))
    assert outcome.previous is None
    assert (root / "current" / "manifest.json").is_file()
