"""Installed versions on a device: staging, atomic install, rollback, clean-up.

Layout under the agent root:

    ROOT/current                      symlink -> versions/{package_id}/{version}
    ROOT/versions/{package_id}/{version}/   one extracted package per installed version
    ROOT/staging/                     packages being extracted and smoke-tested
    ROOT/downloads/                   package zips (and `.part` files) being fetched
    ROOT/state.json                   deliveries and install history (see `state`)

An install is journal-ordered, each step durable before the next begins:

1. the staged folder's files are fsynced;
2. the intent (`installing` in `state.json`) is written;
3. the folder is renamed into `versions/`;
4. the version is added to the history in `state.json`;
5. `current` is swapped atomically (a new symlink beside it, `os.replace`d over it);
6. the intent is cleared and the history pruned, then unkept folders are deleted.

So whenever `state.json` and `ROOT/current` are read (`agent status`), the current version
is in the history, and a reader of `ROOT/current` sees the old version or the new one,
never a mix. A crash before step 3 leaves the old version current; `prepare_root` (run
when the agent starts) finishes an install whose folder was moved into place, and clears
staging, trash and the downloads no delivery still needs.

The history lists versions in install order; `current` may point at any of them. A
rollback only switches `current` (one atomic step) and keeps the version it left on disk
and in the history, so `rollback(root, to=...)` makes it current again without a
download (a redelivery of it installs it afresh). Only the newest `keep` versions are
kept, and `current` always.

Anti-rollback: an install of a package that sets `min_version` raises its model's floor
in `state.json` in the same write that lists the version. A rollback to a kept version
below its model's floor is refused unless asked for explicitly (`allow_below_floor`,
`modelferry agent rollback --below-floor`): the operator at the device may go back, a
delivery may not. The floor stays where it is either way.

Every function here blocks (file system work under the root's lock): call them from async
code with `asyncio.to_thread`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from modelferry.delivery.protocol.messages import format_timestamp, utc_now
from modelferry.edge.state import AgentState, InstalledVersion, StateStore, fsync_directory
from modelferry.errors import DeliveryError, VersionFloorError
from modelferry.packaging.statement import check_version_floor

__all__ = [
    "CURRENT_LINK",
    "InstallError",
    "InstallOutcome",
    "current_version",
    "install_version",
    "prepare_root",
    "rollback",
    "staging_folder",
]

logger = logging.getLogger(__name__)

CURRENT_LINK: Final = "current"
VERSIONS_DIR: Final = "versions"
STAGING_DIR: Final = "staging"
DOWNLOADS_DIR: Final = "downloads"
_TRASH_DIR: Final = "trash"


class InstallError(DeliveryError):
    """A version could not be installed or rolled back; the current version is unchanged."""


@dataclass(frozen=True)
class InstallOutcome:
    """What an install or a rollback changed."""

    current: InstalledVersion
    previous: InstalledVersion | None
    #: A rollback made a version current that was installed after the one it replaced.
    forward: bool = False


def prepare_root(root: Path) -> None:
    """Create the layout and recover from whatever an interrupted run left.

    An install whose folder reached `versions/` is finished (it was verified and smoke
    tested before the move); one that did not is dropped. Staging, trash,
    temporary links, folders no history lists and downloads no pending delivery needs are
    removed; the `.part` of a pending delivery's package is kept, to resume it.
    """
    for name in (VERSIONS_DIR, STAGING_DIR, DOWNLOADS_DIR):
        (root / name).mkdir(parents=True, exist_ok=True)
    for name in (STAGING_DIR, _TRASH_DIR):
        folder = root / name
        if folder.is_dir():
            for leftover in folder.iterdir():
                _remove(leftover)
    for leftover in root.glob(f".{CURRENT_LINK}.*"):
        _remove(leftover)
    store = StateStore(root)
    with store.update() as state:
        _finish_install(root, store, state)
        _repair_history(root, state)
        store.write(state)
        _remove_unlisted_versions(root, state)
        _clear_downloads(root, state)


def staging_folder(root: Path) -> Path:
    """A fresh, empty folder under `ROOT/staging` (on the same file system as `versions`)."""
    folder = root / STAGING_DIR / uuid.uuid4().hex
    folder.mkdir(parents=True)
    return folder


def current_version(root: Path) -> InstalledVersion | None:
    """The version `ROOT/current` points at, or None when nothing is installed."""
    target = _current_target(root)
    if target is None:
        return None
    return StateStore(root).read().find(*target) or _entry_from_folder(root, *target)


def install_version(
    root: Path,
    staged: Path,
    version: InstalledVersion,
    *,
    keep: int = 3,
    min_version: str | None = None,
) -> InstallOutcome:
    """Move a verified, smoke-tested `staged` folder into place and make it current.

    Args:
        root: The agent root.
        staged: The extracted package (from `staging_folder`); it is moved, not copied.
        version: Which version it is (package id, version, model, delivery).
        keep: How many installed versions to keep, the current one included (at least 2
            so that there is something to roll back to).
        min_version: The package's anti-rollback floor for its model, raised with the
            install (never lowered).

    Raises:
        InstallError: the version is already current, or a file system step failed (the
            previous version then stays current).
    """
    store = StateStore(root)
    with store.update() as state:
        previous = _current_entry(root, state)
        if previous is not None and _same(previous, version):
            raise InstallError(f"{version.label} is already the current version")
        destination = root / version.relative_path
        entry = _stamped(version)
        try:
            # Durable before the move: a crash after it finishes the install with these files.
            _fsync_tree(staged)
            if destination.exists():
                # An older install of this very version (rolled away, or half-left): replace,
                # before the journal names the folder, which must then be the new one.
                _move_to_trash(root, destination)
            state.installing = entry
            store.write(state)
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staged, destination)
            fsync_directory(destination.parent)
            # Listed before it becomes current, so the history always holds the current one.
            state.history = [e for e in state.history if not _same(e, entry)] + [entry]
            if min_version is not None and version.model_name:
                state.raise_floor(version.model_name, min_version)
            store.write(state)
            _point_current(root, version.relative_path)
        except OSError as exc:
            raise InstallError(f"cannot install {version.label}: {exc}") from exc
        state.installing = None
        _prune(root, store, state, keep)
    return InstallOutcome(current=entry, previous=previous)


def rollback(
    root: Path, *, to: str | None = None, allow_below_floor: bool = False
) -> InstallOutcome:
    """Make another kept version current: the one installed before the current one, or `to`.

    Nothing is deleted and the history is unchanged: the version rolled back from stays
    installed, so a later `rollback(root, to=...)` can make it current again (a roll
    forward). Returns the new current version as `current` and the one it replaced as
    `previous`, and `forward` when `current` was installed after `previous`.

    Args:
        root: The agent root.
        to: The version to make current (`version`, or `package_id/version` when several
            packages are kept); it must be kept under `root`, older or newer than current.
        allow_below_floor: Go to a version below its model's anti-rollback floor too.

    Raises:
        InstallError: nothing is installed, no earlier version is kept, or `to` is not kept
            or already current.
        VersionFloorError: the target is below its model's floor (and not allowed).
    """
    store = StateStore(root)
    with store.update() as state:
        current = _current_entry(root, state)
        if current is None:
            raise InstallError(f"nothing is installed under {root}; there is nothing to roll back")
        kept = [e for e in state.history if (root / e.relative_path).is_dir()]
        target = _chosen(root, current, kept, to) if to else _before(root, current, kept)
        if not allow_below_floor:
            _check_floor(target, state)
        elif target.model_name in state.version_floors:
            logger.warning(
                "%s: rolling back to %s below the anti-rollback floor %s of %s, as asked",
                root,
                target.label,
                state.version_floors[target.model_name],
                target.model_name,
            )
        try:
            _point_current(root, target.relative_path)
        except OSError as exc:
            raise InstallError(f"cannot roll back to {target.label}: {exc}") from exc
    forward = _position(kept, target) > _position(kept, current)
    return InstallOutcome(current=target, previous=current, forward=forward)


def _check_floor(target: InstalledVersion, state: AgentState) -> None:
    try:
        check_version_floor(target.model_name, target.model_version, state.version_floors)
    except VersionFloorError as exc:
        raise VersionFloorError(
            f"{target.label} holds {target.model_name} version {target.model_version or '?'}, "
            f"below {exc.floor}, the lowest version of {target.model_name} this device "
            "accepts (anti-rollback); roll back to it anyway with --below-floor "
            "(allow_below_floor=True) if you mean to, the floor stays",
            model_name=exc.model_name,
            model_version=exc.model_version,
            floor=exc.floor,
        ) from None


def _position(kept: list[InstalledVersion], version: InstalledVersion) -> int:
    """Where `version` is in install order (after every kept one if it is not kept)."""
    return next((i for i, e in enumerate(kept) if _same(e, version)), len(kept))


def _before(
    root: Path, current: InstalledVersion, kept: list[InstalledVersion]
) -> InstalledVersion:
    index = _position(kept, current)
    if index == 0:
        raise InstallError(
            f"no version before {current.label} is kept under {root}; cannot roll back"
        )
    return kept[index - 1]


def _chosen(
    root: Path, current: InstalledVersion, kept: list[InstalledVersion], to: str
) -> InstalledVersion:
    matches = [e for e in kept if to in (e.version, e.label)]
    if len(matches) != 1:
        listed = ", ".join(e.label for e in kept) or "none"
        why = "is not kept" if not matches else "names several packages; give package_id/version"
        raise InstallError(f"version {to!r} {why} under {root}; kept: {listed}")
    if _same(matches[0], current):
        raise InstallError(f"{current.label} is already the current version")
    return matches[0]


def discard(folder: Path) -> None:
    """Delete a staged folder or a download that will not be installed."""
    _remove(folder)


# ---------------------------------------------------------------------------- internals


def _same(a: InstalledVersion, b: InstalledVersion) -> bool:
    return (a.package_id, a.version) == (b.package_id, b.version)


def _stamped(version: InstalledVersion) -> InstalledVersion:
    return InstalledVersion(
        package_id=version.package_id,
        version=version.version,
        model_name=version.model_name,
        model_version=version.model_version,
        delivery_id=version.delivery_id,
        installed_at=format_timestamp(utc_now()),
    )


def _current_target(root: Path) -> tuple[str, str] | None:
    try:
        target = os.readlink(root / CURRENT_LINK)
    except (FileNotFoundError, OSError):
        return None
    parts = Path(target).parts
    if len(parts) != 3 or parts[0] != VERSIONS_DIR:
        logger.warning("%s points at %s, outside %s/", root / CURRENT_LINK, target, VERSIONS_DIR)
        return None
    if not (root / target).is_dir():
        # Deleted by hand: nothing usable is installed, so a delivery installs afresh.
        logger.warning("%s points at %s, which is gone", root / CURRENT_LINK, target)
        return None
    return parts[1], parts[2]


def _current_entry(root: Path, state: AgentState) -> InstalledVersion | None:
    target = _current_target(root)
    if target is None:
        return None
    return state.find(*target) or _entry_from_folder(root, *target)


def _entry_from_folder(root: Path, package_id: str, version: str) -> InstalledVersion:
    """A history entry rebuilt from the installed package's own manifest (best effort)."""
    model_name = model_version = ""
    with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
        folder = root / VERSIONS_DIR / package_id / version
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        model_name = str(manifest["model"]["name"])
        model_version = str(manifest["model"]["version"])
    return InstalledVersion(package_id, version, model_name, model_version)


def _point_current(root: Path, relative: str) -> None:
    temporary = root / f".{CURRENT_LINK}.{uuid.uuid4().hex}"
    os.symlink(relative, temporary)
    try:
        os.replace(temporary, root / CURRENT_LINK)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    fsync_directory(root)


def _prune(root: Path, store: StateStore, state: AgentState, keep: int) -> None:
    """Keep the newest `keep` installed versions, and the current one; delete the rest.

    Newest by install order, so a version rolled back from (newer than current) goes only
    once `keep` newer installs outnumber it. The shorter history is written first: a folder
    is deleted only once nothing lists it.
    """
    target = _current_target(root)
    newest = state.history[-max(keep, 1) :]
    state.history = [e for e in state.history if e in newest or (e.package_id, e.version) == target]
    store.write(state)
    _remove_unlisted_versions(root, state)


def _remove_unlisted_versions(root: Path, state: AgentState) -> None:
    kept = {e.relative_path for e in state.history}
    target = _current_target(root)
    if target is not None:
        kept.add(f"{VERSIONS_DIR}/{target[0]}/{target[1]}")
    versions = root / VERSIONS_DIR
    if not versions.is_dir():
        return
    for package in versions.iterdir():
        for folder in package.iterdir() if package.is_dir() else ():
            if f"{VERSIONS_DIR}/{package.name}/{folder.name}" not in kept:
                logger.info("removing %s (no longer kept)", folder)
                _move_to_trash(root, folder)
        if package.is_dir() and not any(package.iterdir()):
            package.rmdir()
    _remove(root / _TRASH_DIR)


def _finish_install(root: Path, store: StateStore, state: AgentState) -> None:
    """Finish the install the journal names if its folder was moved in; else drop it."""
    entry = state.installing
    if entry is None:
        return
    if (root / entry.relative_path).is_dir():
        logger.warning("%s: finishing the interrupted install of %s", root, entry.label)
        state.history = [e for e in state.history if not _same(e, entry)] + [entry]
        store.write(state)
        if _current_target(root) != (entry.package_id, entry.version):
            _point_current(root, entry.relative_path)
    else:
        logger.warning("%s: the install of %s was interrupted; dropped", root, entry.label)
    state.installing = None


def _repair_history(root: Path, state: AgentState) -> None:
    """Make the history list the current version."""
    target = _current_target(root)
    if target is None:
        return
    index = next(
        (i for i, e in enumerate(state.history) if (e.package_id, e.version) == target), None
    )
    if index is None:
        # Made current by hand, or by an older agent that wrote the state after the swap.
        logger.warning("%s: current is %s/%s; adding it to the history", root, *target)
        state.history.append(_entry_from_folder(root, *target))


def _clear_downloads(root: Path, state: AgentState) -> None:
    """Remove every download but the `.part` of a pending delivery not yet installed."""
    installed = {(e.package_id, e.version) for e in state.history}
    wanted = {
        f"{record.package_id}-{record.package_version}.zip.part"
        for record in state.pending()
        if (record.package_id, record.package_version) not in installed
    }
    downloads = root / DOWNLOADS_DIR
    for leftover in downloads.iterdir() if downloads.is_dir() else ():
        if leftover.name not in wanted:
            logger.info("removing the leftover download %s", leftover.name)
            _remove(leftover)


def _fsync_tree(folder: Path) -> None:
    """Make every file and folder under `folder` durable."""
    for dirpath, _, files in os.walk(folder):
        for name in files:
            handle = os.open(Path(dirpath, name), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            try:
                os.fsync(handle)
            finally:
                os.close(handle)
        fsync_directory(Path(dirpath))


def _move_to_trash(root: Path, folder: Path) -> None:
    # A rename is atomic; the slow delete happens after, and a crash leaves only trash.
    trash = root / _TRASH_DIR
    trash.mkdir(exist_ok=True)
    os.rename(folder, trash / uuid.uuid4().hex)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
