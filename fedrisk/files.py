"""Crash-safe writes: a file or a folder appears whole and durable, or not at all."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

PRIVATE_FILE_MODE: Final = 0o600
PUBLIC_FILE_MODE: Final = 0o644
PUBLIC_DIR_MODE: Final = 0o755


def fsync_directory(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (best effort where the OS refuses)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(path: Path, data: bytes | str, *, private: bool = False) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half.

    Parameters
    ----------
    path
        Destination; its folder must exist.
    data
        File content; text is written as UTF-8.
    private
        Create the file mode 0600 (owner only) instead of 0644.

    Notes
    -----
    The temporary file is created beside the destination with its final mode *before* any byte is
    written, so a secret is never readable by others, not even for a moment. It is fsynced before
    ``os.replace`` and the folder after it, so a crash leaves either version, never an empty file.
    """
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE if private else PUBLIC_FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_directory(path.parent)
    return path


@contextlib.contextmanager
def staged_directory(target: Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield an empty folder beside ``target``; on a clean exit it becomes ``target`` in one rename.

    Parameters
    ----------
    target
        The folder to publish. Its parent is created if missing.
    replace
        Remove an existing ``target`` first. Without it, an existing ``target`` makes the rename
        fail with ``OSError`` (a concurrent writer won), which the caller can inspect.

    Notes
    -----
    Every file in the staged folder is fsynced before the rename and the parent after it. On any
    error the staged folder is removed, so nothing half-written is ever left behind.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield staged
        for child in staged.rglob("*"):
            if child.is_file():
                with child.open("rb") as handle:
                    os.fsync(handle.fileno())
        staged.chmod(PUBLIC_DIR_MODE)
        if replace and target.exists():
            shutil.rmtree(target)
        staged.rename(target)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    fsync_directory(target.parent)
