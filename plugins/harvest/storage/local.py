"""A store in a local folder: writes go to a temp file in the store's writing folder and are renamed
into place, so a reader never sees half an object. Files and folders get the permissions the
process's umask leaves (0644 and 0755 under the usual 022), as any other tool's output would: a
training job or web server running as another user reads a published dataset; a umask of 077 keeps
a store private. A writer killed mid-write leaves its temp file
there, where the next store opened on that machine finds and removes it: only in a writing folder a
store created itself (it holds the store's marker folder), and only files named like its temp files.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import socket
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from harvest.storage.interface import COPY_CHUNK, StorageError

#: the folder of unfinished local writes (renamed into place when complete)
WRITING = ".writing"


#: made inside the writing folder by the store that creates it; a writing folder without it is not
#: swept, as it is someone else's (a folder opened as a store may hold a ``.writing`` of its own). A
#: folder, not a file, so a published dataset still holds only its objects as files.
WRITING_MARKER = ".image-harvester-store"


#: a temp file this old belongs to a dead writer even if its process id was reused or is on another host
ABANDONED_AFTER = 24 * 3600


#: the names :func:`_temp_prefix` and a counter give temp files: ``.tmp-<host>.<pid>-<hex>``
_TEMP_NAME = re.compile(r"\.tmp-(?P<host>.+)\.(?P<pid>[0-9]+)-[0-9a-f]+")


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
#: asked for when a file is created; the umask takes its bits away (rename keeps them)
_FILE_MODE = 0o666


#: temp file names within a process: host and process id, then a number from this counter
_TEMP_NAMES = itertools.count()


_prefix: tuple[int, str] | None = None


def _discard(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _temp_prefix() -> str:
    """``.tmp-<host>.<pid>-``, worked out again after a fork (the child has another process id)."""
    global _prefix
    pid = os.getpid()
    if _prefix is None or _prefix[0] != pid:
        _prefix = (pid, f".tmp-{socket.gethostname()}.{pid}-")
    return _prefix[1]


class LocalStore:
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.location = str(self.root)
        self._unsynced: list[str] = []
        self._lock = threading.Lock()
        self._deferred = False
        self._untracked = False
        #: folder keys already proven to resolve inside the root ("images/ab" -> its real path + "/")
        self._folders: dict[str, str] = {}
        self._remove_abandoned()

    def _remove_abandoned(self) -> None:
        """Delete the temp files of writers that died mid-write (a SIGKILLed or OOM-killed task): no
        one will rename them. Names carry host and process id; a live writer's files are left alone.
        Only a writing folder a store created (:data:`WRITING_MARKER`) is swept, and in it only files
        named like a store's temp files: opening someone else's folder as a store deletes nothing."""
        entries = _own_writing_folder(self.root / WRITING)
        host, now = socket.gethostname(), time.time()
        for entry in entries:
            name = _TEMP_NAME.fullmatch(entry.name)
            try:
                if name is None or not entry.is_file(follow_symlinks=False):
                    continue
                dead = name["host"] == host and not _alive(int(name["pid"]))
                if dead or now - entry.stat(follow_symlinks=False).st_mtime > ABANDONED_AFTER:
                    os.unlink(entry.path)
            except OSError:
                pass  # removed by another store meanwhile

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise StorageError(self.location, f"key {key!r} escapes the store")
        return path

    def _write_path(self, key: str) -> str:
        """Where a write of ``key`` goes: the folder is resolved (symlinks and all) once and then
        remembered, since resolving walks every component of the path with a syscall each; the file
        name itself is never followed (writes rename over it, :meth:`exists` does not follow it).
        A string, not a Path: this runs twice per download, and pathlib costs more than the lstat."""
        folder, _, name = key.rpartition("/")
        if name in ("", ".", "..") or folder.startswith("/"):
            return str(self._path(key))
        real = self._folders.get(folder)
        if real is None:
            resolved = (self.root / folder).resolve() if folder else self.root
            if resolved != self.root and self.root not in resolved.parents:
                raise StorageError(self.location, f"key {key!r} escapes the store")
            real = self._folders[folder] = f"{resolved}{os.sep}"
        return real + name

    def exists(self, key: str) -> bool:
        try:
            return stat.S_ISREG(os.lstat(self._write_path(key)).st_mode)
        except OSError:
            return False

    @contextmanager
    def deferred_sync(self) -> Iterator[None]:
        """Writes inside skip their own fsync; the caller calls :meth:`sync` before relying on them
        (one sync for a batch of files is several times cheaper than an fsync each)."""
        self._deferred = True
        try:
            yield
        finally:
            self._deferred = False
            self.sync()

    @contextmanager
    def synced_elsewhere(self) -> Iterator[None]:
        """Writes inside skip their fsync and are not remembered: the process that adopts them
        (:meth:`adopt`) syncs them. For an inspecting process of the download stage, which may
        write for hours and would otherwise keep every path it wrote."""
        self._deferred = self._untracked = True
        try:
            yield
        finally:
            self._deferred = self._untracked = False

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._write(key, data)

    def put_file(self, key: str, source: BinaryIO, content_type: str = "application/octet-stream") -> None:
        """Like :meth:`put`, copying from an open file from its start: an object written as it is
        built (a manifest, a tar shard) never has to be held in memory whole."""
        source.seek(0)
        self._write(key, source)

    def _write(self, key: str, data: bytes | BinaryIO) -> None:
        path = self._write_path(key)
        durable = not self._deferred
        try:
            tmp = self._write_temp(data, durable)
            try:
                self._rename(tmp, path)
                if not durable and not self._untracked:
                    with self._lock:
                        self._unsynced.append(path)
            except BaseException:
                _discard(tmp)
                raise
        except OSError as exc:
            raise StorageError(str(path), f"cannot write: {exc.strerror or exc}") from exc

    def _write_temp(self, data: bytes | BinaryIO, durable: bool) -> str:
        """``data`` in a new temp file of the writing folder (named after this host and process, for
        :meth:`_remove_abandoned`); returns its path. Plain ``os`` calls, the folders assumed to exist
        until a call says otherwise: a write is in the hot path of a download, where ``mkstemp``, two
        ``mkdir`` and a buffered file object cost more CPU (bench/README.md)."""
        writing = str(self.root / WRITING)
        prefix = _temp_prefix()
        for _ in range(100):
            tmp = f"{writing}/{prefix}{next(_TEMP_NAMES):x}"
            try:
                fd = os.open(tmp, _CREATE, _FILE_MODE)
            except FileExistsError:  # left by a dead process that had this process id
                continue
            except FileNotFoundError:
                _make_writing_folder(writing)
                continue
            try:
                chunks = (data,) if isinstance(data, bytes) else iter(lambda: data.read(COPY_CHUNK), b"")
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
                if durable:
                    os.fsync(fd)
            except BaseException:
                os.close(fd)
                _discard(tmp)
                raise
            os.close(fd)
            return tmp
        raise FileExistsError(f"no free temporary file name in {writing}")

    def _rename(self, tmp: str, path: str) -> None:
        """Move the temp file into place, creating the key's folder the first time it is missing
        (a folder that exists is not looked at again: a ``mkdir`` per write costs as much as the write)."""
        try:
            os.replace(tmp, path)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.replace(tmp, path)

    def put_new(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> bool:
        """Write a content-addressed key unless it is there; True if this call wrote it. (Two writers
        racing here both rename identical bytes into place, which no reader can tell apart.)"""
        if self.exists(key):
            return False
        self.put(key, data, content_type)
        return True

    def adopt(self, *keys: str) -> None:
        """Keys another process wrote into this store without syncing (an inspecting process of the
        download stage): the next :meth:`sync` makes them durable with this store's own writes."""
        with self._lock:
            self._unsynced.extend(self._write_path(key) for key in keys)

    def sync(self) -> None:
        """Make every non-durable write so far durable: one syncfs() for the whole batch where the
        platform has it (an fsync per file costs several times more), else an fsync per file."""
        with self._lock:
            pending, self._unsynced = self._unsynced, []
        if not pending:
            return
        if _syncfs(self.root):
            return
        for path in pending:
            try:
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise StorageError(str(path), f"cannot sync: {exc.strerror or exc}") from exc

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except OSError as exc:
            raise StorageError(str(self._path(key)), f"cannot read: {exc.strerror or exc}") from exc

    def sha256_of(self, key: str) -> str | None:
        path = self._path(key)
        if not path.is_file():
            return None
        return hashlib.sha256(path.read_bytes()).hexdigest()

    def keys(self, prefix: str = "") -> Iterator[str]:
        base = self.root / prefix if prefix else self.root
        if not base.exists():
            return
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.startswith(".tmp-") and WRITING not in path.parts:
                yield path.relative_to(self.root).as_posix()

    def url(self, key: str) -> str:
        return str(self._path(key))

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(str(self._path(key)), f"cannot delete: {exc.strerror or exc}") from exc


def _own_writing_folder(writing: Path) -> list[os.DirEntry]:
    """The entries of a writing folder a store created (a real folder, not a link, holding the marker
    folder); none for any other folder, which is not this store's to clean."""
    try:
        if not stat.S_ISDIR(os.lstat(writing).st_mode):
            return []
        if not stat.S_ISDIR(os.lstat(writing / WRITING_MARKER).st_mode):
            return []
        return list(os.scandir(writing))
    except OSError:
        return []


def _make_writing_folder(writing: str) -> None:
    """Create the writing folder and mark it as a store's; a folder that already exists (made by a
    concurrent writer, or not by a store at all) is used as it is and left unmarked."""
    os.makedirs(os.path.dirname(writing), exist_ok=True)
    try:
        os.mkdir(writing)
    except FileExistsError:
        return
    try:
        os.mkdir(os.path.join(writing, WRITING_MARKER))
    except FileExistsError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _syncfs(root: Path) -> bool:
    """syncfs(2) on the filesystem holding ``root``; False where it is not available."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        syncfs = libc.syncfs
    except (OSError, AttributeError):
        return False
    fd = os.open(root, os.O_RDONLY)
    try:
        return syncfs(fd) == 0
    finally:
        os.close(fd)
