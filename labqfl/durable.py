"""Replace a file so that a crash at any moment leaves the old file or the new one, whole.

:func:`replace_durably` writes the new content to a temporary file beside the target (same folder, so the
rename stays on one filesystem), flushes and ``fsync``-s it, renames it over the target (``os.replace``:
rename(2), atomic), then ``fsync``-s the folder, since the rename lives in the folder's entry and only an
fsync of the folder makes it durable (POSIX fsync(2); the Linux fsync(2) man page: "an explicit fsync() on a
file descriptor for the directory is also needed"). Once it returns, the new content is on disk. A
filesystem that cannot sync a folder (some network mounts) still gets the synced file.

The temporary file's name carries the process id and a random part and is created exclusively, so two
processes replacing the same file never write into one temporary file; a write that fails removes its
temporary file and leaves the target untouched.

Used for a run's ``state.json`` and training checkpoints (labqfl/mainjob.py), a run folder's JSON files
(labqfl/runs.py) and a node's record of the signed FL specs it trained under (labqfl/fl/flower/specsig.py).
Key stores are SQLite databases with their own journal and are not written through this.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["TEMP_SUFFIX", "leftover_temporaries", "replace_durably", "sync_folder"]

#: The ending of every temporary file name :func:`replace_durably` makes (``.<name>.<pid>.<random>.tmp``)
TEMP_SUFFIX = ".tmp"


def replace_durably(path: Path, content: bytes | str | Callable[[BinaryIO], object], *, mode: int = 0o666,
                    secret: bool = False) -> None:
    """Replace ``path`` with ``content`` durably (module doc). ``content``: bytes, text (written as UTF-8) or a
    function that writes to the open binary file (e.g. ``lambda f: numpy.save(f, a)``). ``mode``: the new
    file's permission bits before the umask (``0o600`` for a file only its owner may read). ``secret``: the
    content is key material: a write that fails overwrites its temporary file with zeros before removing it
    (a crash leaves it; :func:`leftover_temporaries` finds it for the owner to shred at its next start)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(content, str):
                f.write(content.encode("utf-8"))
            elif isinstance(content, bytes | bytearray | memoryview):
                f.write(content)
            else:
                content(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if secret:
            _zero(tmp)
        tmp.unlink(missing_ok=True)
        raise
    sync_folder(path.parent)


def leftover_temporaries(folder: Path) -> list[Path]:
    """The temporary files :func:`replace_durably` left in ``folder`` (a process killed between its write and
    its rename), oldest name first; none while no writer of that folder runs."""
    folder = Path(folder)
    return sorted(p for p in folder.glob(f".*{TEMP_SUFFIX}") if p.is_file()) if folder.is_dir() else []


def _zero(path: Path) -> None:
    try:
        size = path.stat().st_size
        with open(path, "r+b") as f:
            f.write(b"\0" * size)
            f.flush()
            os.fsync(f.fileno())
    except OSError:
        pass  # removed next; the write that failed is raised


#: errno values meaning "this filesystem cannot sync a folder" (some network and FUSE mounts): ignored. Any other
#: failure (EIO above all) is raised: the rename may not be on disk.
_CANNOT_SYNC_FOLDER = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF})


def sync_folder(folder: Path) -> None:
    """fsync ``folder`` so that a rename or link made in it is durable. A folder this process may not open for
    reading (EACCES, EPERM) or a filesystem that cannot sync folders (:data:`_CANNOT_SYNC_FOLDER`) is skipped;
    every other error is raised."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            return
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _CANNOT_SYNC_FOLDER:
            raise
    finally:
        os.close(fd)
