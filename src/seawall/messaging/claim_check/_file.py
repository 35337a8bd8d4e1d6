"""Blobs as files in a directory: the default claim-check store, nothing to install.

Each blob is one file ``<directory>/<first two characters of key>/<key>``. A write
goes to a temporary file in the same folder, is flushed to disk (``fsync``) and
renamed over the final name, so a reader never sees half a blob and a crash leaves
at most a temporary file (removed by :meth:`FileBlobStore.collect`). Share the
directory (a local disk, or a network file system) between producers and consumers.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from seawall.clock import Clock
from seawall.errors import ConfigurationError
from seawall.messaging.claim_check._errors import BlobNotFoundError, ClaimCheckError

if TYPE_CHECKING:
    from seawall.engines._base import Transaction

__all__ = ["FileBlobStore", "check_key"]

_KEY = re.compile(r"[A-Za-z0-9_-]{1,200}")
_TEMPORARY = ".tmp-"


def check_key(key: str) -> str:
    """``key`` if it is a valid blob key (letters, digits, ``-``, ``_``; 1-200), else raise."""
    if not isinstance(key, str) or _KEY.fullmatch(key) is None:
        raise ConfigurationError(
            f"blob key {key!r} is not valid; use 1-200 letters, digits, '-' or '_'"
        )
    return key


class FileBlobStore:
    """A :class:`BlobStore` keeping each blob as a file under ``directory`` (created if needed).

    ``fsync=False`` skips the flushes to disk (faster; a power cut may lose blobs
    whose messages survived). ``clock`` stamps blob times by hand (tests).
    """

    def __init__(
        self, directory: str | os.PathLike[str], *, fsync: bool = True, clock: Clock | None = None
    ) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(
                f"claim check directory {str(self.directory)!r} cannot be created ({exc}); "
                "pass a writable directory"
            ) from exc
        if not isinstance(fsync, bool):
            raise ConfigurationError(f"fsync={fsync!r} must be True or False")
        self.fsync = fsync
        self._clock = clock
        self._now: Callable[[], float] = clock.now if clock is not None else time.time

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / key

    def put(self, key: str, data: bytes, transaction: Transaction | None = None) -> None:
        """Write the blob atomically (temporary file, fsync, rename); ``transaction`` is ignored."""
        path = self._path(check_key(key))
        folder = path.parent
        created = not folder.exists()
        temporary = folder / f"{_TEMPORARY}{key}-{os.getpid()}-{time.monotonic_ns()}"
        try:
            folder.mkdir(exist_ok=True)
            with open(temporary, "wb") as file:
                file.write(data)
                if self.fsync:
                    file.flush()
                    os.fsync(file.fileno())
            if self._clock is not None:
                stamp = self._now()
                os.utime(temporary, (stamp, stamp))
            os.replace(temporary, path)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise ClaimCheckError(
                    f"cannot write claim check blob {key!r} under {str(self.directory)!r}: {exc}"
                ) from exc
            raise
        if self.fsync:
            _fsync_directory(folder)
            if created:
                _fsync_directory(self.directory)

    def get(self, key: str) -> bytes:
        """The blob's bytes; :class:`BlobNotFoundError` when the file is not there."""
        try:
            with open(self._path(check_key(key)), "rb") as file:
                return file.read()
        except FileNotFoundError:
            raise BlobNotFoundError(key, f"directory {str(self.directory)!r}") from None

    def delete(self, key: str) -> bool:
        """Remove the blob's file; False when it was not there."""
        try:
            self._path(check_key(key)).unlink()
        except FileNotFoundError:
            return False
        return True

    def delete_many(self, keys: Iterable[str]) -> int:
        """Remove every listed blob that exists; return how many."""
        return sum(1 for key in keys if self.delete(key))

    def collect(self, older_than: float, keep: Collection[str]) -> int:
        """Remove blobs (and leftover temporary files) older than ``older_than`` seconds."""
        cutoff = self._now() - older_than
        removed = 0
        for path in self._files():
            name = path.name
            if name in keep:
                continue
            try:
                if path.stat().st_mtime >= cutoff:
                    continue
                path.unlink()
            except FileNotFoundError:
                continue
            if not name.startswith(_TEMPORARY):
                removed += 1
        return removed

    def keys(self) -> list[str]:
        """Every stored key, sorted."""
        return sorted(path.name for path in self._files() if not path.name.startswith(_TEMPORARY))

    def _files(self) -> Iterator[Path]:
        for folder in self.directory.iterdir():
            if folder.is_dir() and len(folder.name) <= 2:
                yield from (path for path in folder.iterdir() if path.is_file())

    def __repr__(self) -> str:
        return f"FileBlobStore({str(self.directory)!r})"


def _fsync_directory(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable (a no-op where folders cannot be opened)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
