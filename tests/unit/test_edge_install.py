"""Installed versions on disk: atomic install, rollback, pruning, recovery, state file."""

from __future__ import annotations

import json
import os
import shutil
import threading
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
    DeviceDeliveryState,
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


def test_rollback_goes_back_one_version_at_a_time_and_keeps_the_newer_ones(root: Path) -> None:
    for version in ("1", "2", "3"):
        put(root, version)

    assert rollback(root).current.version == "2"
    assert rollback(root).current.version == "1"
    assert on_disk(root) == ["1", "2", "3"]
    assert [e.version for e in StateStore(root).read().history] == ["1", "2", "3"]
    assert current_version(root) == StateStore(root).read().history[0]
    with pytest.raises(InstallError, match="no version before pkg/1"):
        rollback(root)


def test_rollback_to_a_newer_kept_version_rolls_forward(root: Path) -> None:
    put(root, "1")
    put(root, "2")
    rollback(root)

    outcome = rollback(root, to="2")

    assert (outcome.current.version, outcome.previous and outcome.previous.version) == ("2", "1")
    assert os.readlink(root / "current") == "versions/pkg/2"
    assert rollback(root, to="pkg/1").current.version == "1"
    assert on_disk(root) == ["1", "2"]


@pytest.mark.parametrize(
    ("to", "message"),
    [("9", "version '9' is not kept under .*; kept: pkg/1, pkg/2"), ("1", "already the current")],
)
def test_rollback_to_a_version_not_kept_or_current_is_refused(
    root: Path, to: str, message: str
) -> None:
    put(root, "1")
    put(root, "2")
    rollback(root)

    with pytest.raises(InstallError, match=message):
        rollback(root, to=to)
    assert os.readlink(root / "current") == "versions/pkg/1"


def test_the_version_rolled_back_from_survives_a_restart(root: Path) -> None:
    put(root, "1")
    put(root, "2")
    rollback(root)

    prepare_root(root)

    assert on_disk(root) == ["1", "2"]
    assert [e.version for e in StateStore(root).read().history] == ["1", "2"]
    assert rollback(root, to="2").current.version == "2"


def test_pruning_keeps_current_and_the_newer_versions_until_the_count_is_exceeded(
    root: Path,
) -> None:
    for version in ("1", "2", "3"):
        put(root, version)
    rollback(root)
    rollback(root)  # current is 1, the oldest; 2 and 3 stay for a roll forward

    put(root, "4")  # four versions, three kept: the oldest goes
    assert on_disk(root) == ["2", "3", "4"]
    rollback(root, to="2")

    put(root, "5", keep=2)  # 2 was current until now, and is the oldest: it goes
    assert on_disk(root) == ["4", "5"]
    rollback(root, to="4")
    put(root, "6", keep=1)  # keep=1 still never deletes the current version
    assert on_disk(root) == ["6"]


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
        state.record(DeviceDeliveryState("pending", "p", "pkg", "1", "Received"))
        for number in range(MAX_DELIVERY_RECORDS + 5):
            state.record(DeviceDeliveryState(f"d-{number}", "p", "pkg", "1", "Success"))

    saved = store.read()
    assert len(saved.deliveries) == MAX_DELIVERY_RECORDS
    assert "pending" in saved.deliveries
    assert "d-0" not in saved.deliveries
    assert [r.delivery_id for r in saved.pending()] == ["pending"]


def test_a_failed_update_writes_nothing(root: Path) -> None:
    store = StateStore(root)
    with store.update() as state:
        state.record(DeviceDeliveryState("d-1", "p", "pkg", "1", "Received"))

    def fail_midway() -> None:
        with store.update() as state:
            state.record(DeviceDeliveryState("d-2", "p", "pkg", "1", "Received"))
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


# --------------------------------------------------------------- crash at every step


def _status_of(root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[str, list[str], str]:
    """What `modelferry agent status` prints: current, the listed versions, the starred one."""
    from modelferry.cli.agent import _status

    capsys.readouterr()
    assert _status(root) == 0
    out = capsys.readouterr().out.split("recent deliveries:")[0]
    lines = out.splitlines()
    current = lines[0].removeprefix("current: ")
    listed = [line.split()[-4] for line in lines[1:]]  # label, model, "v" version, time
    starred = [line.split()[1] for line in lines[1:] if line.startswith(" *")]
    return current, listed, starred[0] if starred else ""


def _install_killed_after(root: Path, steps: int) -> bool:
    """Install pkg/2 in a child killed with SIGKILL after `steps` durable file system steps.

    Returns True when the install finished before the kill came.
    """
    import signal

    staged = stage(root, "2")
    pid = os.fork()
    if pid == 0:  # the child: count renames, links and fsyncs; die after the n-th
        done = 0

        def barrier(real: object) -> object:
            def step(*args: object, **kwargs: object) -> object:
                nonlocal done
                result = real(*args, **kwargs)  # type: ignore[operator]
                done += 1
                if done >= steps:
                    os.kill(os.getpid(), signal.SIGKILL)
                return result

            return step

        try:
            if steps == 0:
                os.kill(os.getpid(), signal.SIGKILL)
            for name in ("rename", "replace", "symlink", "fsync"):
                setattr(os, name, barrier(getattr(os, name)))
            install_version(root, staged, InstalledVersion("pkg", "2", "m", "2", "d-2"))
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status)


def test_a_kill_at_any_step_of_an_install_leaves_a_consistent_status_and_recovers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    steps = 0
    finished = False
    while not finished:
        root = tmp_path / f"kill-{steps}"
        prepare_root(root)
        put(root, "1")
        with StateStore(root).update() as state:
            state.record(DeviceDeliveryState("d-2", "p", "pkg", "2", "Installing"))
        (root / "downloads" / "pkg-2.zip").write_bytes(b"the downloaded package")
        finished = _install_killed_after(root, steps)

        # Right after the kill, without any repair: what the CLI shows holds together.
        current, listed, starred = _status_of(root, capsys)
        assert current in {"pkg/1", "pkg/2"}, steps
        assert current in listed, (steps, current, listed)
        assert starred == current, (steps, current, listed)
        moved_in = (root / "versions" / "pkg" / "2").is_dir()

        prepare_root(root)  # what the agent does when it starts again

        current, listed, starred = _status_of(root, capsys)
        assert current == ("pkg/2" if moved_in else "pkg/1"), steps
        assert listed[0] == current, (steps, listed)
        assert starred == current, (steps, listed)
        assert on_disk(root) == sorted(label.split("/")[1] for label in listed), steps
        assert list((root / "downloads").iterdir()) == [], steps
        assert list((root / "staging").iterdir()) == [], steps
        assert not (root / "trash").exists() or not any((root / "trash").iterdir()), steps
        assert [p.name for p in root.iterdir() if p.name.startswith(".current")] == [], steps
        steps += 1
        assert steps < 100, "the install never finished"
    assert steps > 5  # the kill did land between the steps


def test_recovery_keeps_only_the_partial_download_of_a_delivery_still_to_install(
    root: Path,
) -> None:
    put(root, "1")
    with StateStore(root).update() as state:
        state.record(DeviceDeliveryState("d-2", "p", "pkg", "2", "Downloading"))
        state.record(DeviceDeliveryState("d-1", "p", "pkg", "1", "Installing"))
    downloads = root / "downloads"
    for name in ("pkg-2.zip.part", "pkg-1.zip", "pkg-1.zip.part", "other-9.zip.part", "x.tmp"):
        (downloads / name).write_bytes(b"bytes")

    prepare_root(root)

    assert sorted(p.name for p in downloads.iterdir()) == ["pkg-2.zip.part"]


def test_a_status_read_waits_for_an_install_or_rollback_under_way(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    entered = threading.Event()

    def read() -> None:
        with store.reading():
            entered.set()

    with store.update():
        reader = threading.Thread(target=read)
        reader.start()
        # While the exclusive lock is held (current and history changing), no read.
        assert not entered.wait(0.3)
    assert entered.wait(10)
    reader.join()


def test_a_status_read_of_a_root_with_nothing_installed_needs_no_lock(tmp_path: Path) -> None:
    with StateStore(tmp_path / "empty").reading() as state:
        assert state.history == []
