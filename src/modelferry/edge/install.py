"""Installed versions on a device: staging, atomic install, rollback, clean-up.

Layout under the agent root:

    ROOT/current                      symlink -> versions/{package_id}/{version}
    ROOT/versions/{package_id}/{version}/   one extracted package per installed version
    ROOT/staging/                     packages being extracted and smoke-tested
    ROOT/downloads/                   package zips (and `.part` files) being fetched
    ROOT/state.json                   deliveries and install history (see `state`)

A version is installed by renaming its staged folder into `versions/` and then swapping
`current` atomically (a new symlink beside it, `os.replace`d over it), so a reader of
`ROOT/current` sees the old version or the new one, never a mix, and a failure before the
swap leaves the old version current and nothing new installed. The previous versions stay
for rollback; only the newest `keep` versions are kept.

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

from modelferry.delivery.messages import format_timestamp, utc_now
from modelferry.edge.state import AgentState, InstalledVersion, StateStore, fsync_directory
from modelferry.errors import DeliveryError

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


def prepare_root(root: Path) -> None:
    """Create the layout and clear what an interrupted run left (staging, trash).

    Also repairs the history should a crash have fallen between the swap of `current`
    and the write of `state.json`.
    """
    for name in (VERSIONS_DIR, STAGING_DIR, DOWNLOADS_DIR):
        (root / name).mkdir(parents=True, exist_ok=True)
    for name in (STAGING_DIR, _TRASH_DIR):
        folder = root / name
        if folder.is_dir():
            for leftover in folder.iterdir():
                _remove(leftover)
    with StateStore(root).update() as state:
        target = _current_target(root)
        if target is None:
            return
        last = state.history[-1] if state.history else None
        if last is None or (last.package_id, last.version) != target:
            logger.warning("%s: current is %s/%s; adding it to the history", root, *target)
            entry = state.find(*target) or _entry_from_folder(root, *target)
            state.history = [e for e in state.history if e is not entry] + [entry]


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
    root: Path, staged: Path, version: InstalledVersion, *, keep: int = 3
) -> InstallOutcome:
    """Move a verified, smoke-tested `staged` folder into place and make it current.

    Args:
        root: The agent root.
        staged: The extracted package (from `staging_folder`); it is moved, not copied.
        version: Which version it is (package id, version, model, delivery).
        keep: How many installed versions to keep, the current one included (at least 2
            so that there is something to roll back to).

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
        try:
            if destination.exists():
                # An older install of this very version (rolled away, or half-left): replace.
                _move_to_trash(root, destination)
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staged, destination)
            fsync_directory(destination.parent)
            _point_current(root, version.relative_path)
        except OSError as exc:
            raise InstallError(f"cannot install {version.label}: {exc}") from exc
        entry = _stamped(version)
        state.history = [e for e in state.history if not _same(e, entry)] + [entry]
        _prune(root, state, keep)
    return InstallOutcome(current=entry, previous=previous)


def rollback(root: Path, *, keep: int = 3) -> InstallOutcome:
    """Make the version installed before the current one current again.

    The rolled-back version is removed from the history and its folder deleted.
    Returns the new current version as `current` and the rolled-back one as `previous`.

    Raises:
        InstallError: nothing is installed, or no earlier version is kept.
    """
    with StateStore(root).update() as state:
        current = _current_entry(root, state)
        if current is None:
            raise InstallError(f"nothing is installed under {root}; there is nothing to roll back")
        index = next(
            (i for i, e in enumerate(state.history) if _same(e, current)), len(state.history)
        )
        earlier = [e for e in state.history[:index] if (root / e.relative_path).is_dir()]
        if not earlier:
            raise InstallError(
                f"no version before {current.label} is kept under {root}; cannot roll back"
            )
        target = earlier[-1]
        try:
            _point_current(root, target.relative_path)
        except OSError as exc:
            raise InstallError(f"cannot roll back to {target.label}: {exc}") from exc
        state.history = [*state.history[:index]]
        _prune(root, state, keep)
    return InstallOutcome(current=target, previous=current)


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


def _prune(root: Path, state: AgentState, keep: int) -> None:
    """Keep the newest `keep` versions (never less than the current one); delete the rest."""
    state.history = state.history[-max(keep, 1) :]
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
