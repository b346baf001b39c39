"""Atomic file writes: a reader never sees a half-written file, and a write that finds the disk full leaves the
file it was replacing as it was and says so (``DiskFull``)."""

from __future__ import annotations

import errno
import glob
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_TMP = ".tmp"
FULL = (errno.ENOSPC, errno.EDQUOT)  # no space left on the device, or over a disk quota


class DiskFull(OSError):
    """An atomic write that found no space left (ENOSPC, or a quota's EDQUOT); the target file is unchanged.
    Made as DiskFull(errno, message); prints as its message alone."""

    def __str__(self) -> str:
        return str(self.strerror)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``.

    The temporary name ends in ``path``'s suffix (writers that infer the format from it work) and
    the file gets the usual permissions (0666 less the umask), not mkstemp's private 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f"{_TMP}{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except OSError as e:
        if e.errno not in FULL:
            raise
        raise DiskFull(
            e.errno,
            f"cannot write {path}: the disk is full ({os.strerror(e.errno)}); nothing half-written is left and what "
            f"was there before is kept: free space on the filesystem of {path.parent} and run the command again",
        ) from None
    finally:
        tmp_path.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def remove_stale_temporaries(path: str | Path) -> None:
    """Delete the temporaries of ``path`` that a killed writer left (none exist while no writer runs)."""
    path = Path(path)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*{_TMP}{glob.escape(path.suffix)}"):
        stale.unlink(missing_ok=True)
