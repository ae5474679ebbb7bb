"""Where the archive's files go: a local folder, or an object store through pyarrow's file systems.

**Local folder** (the default; a path or a ``file://`` URL): a file is written under a hidden temporary
name in its own folder, flushed and ``fsync``-ed, renamed over its final name (``os.replace``, atomic
on POSIX) and the folder is ``fsync``-ed, so after :meth:`LocalStore.write` returns the file survives
a crash or a power cut whole, and a reader sees the old file or the new one, never a part. New folders
are ``fsync``-ed into their parents; removals are ``fsync``-ed too.

**Object store** (``s3://bucket/prefix`` and any other URL that ``pyarrow.fs.FileSystem.from_uri``
opens; S3-compatible stores with ``?endpoint_override=host:port&scheme=http``): an object is written
straight under its final key with ``open_output_stream``; S3 makes an upload visible only when it
completes (a multipart upload is committed by its last request), and a completed PUT is durable, so
no temporary key is needed (a rename on S3 is a copy and a delete, not atomic). Credentials come from
pyarrow's usual places (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``~/.aws``, an instance role),
never from the project's settings.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from configs.settings import ArchiveConfig
from bse_predict.archive.errors import ArchiveLocationError
from bse_predict.archive.layout import FileName
from bse_predict.archive.writer import DatasetStore

__all__ = ["LocalStore", "FileSystemStore", "open_store"]


def _compression(config: ArchiveConfig) -> str | None:
    return None if config.compression == "none" else config.compression


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class LocalStore:
    """The dataset in a local folder, every change ``fsync``-ed before it counts."""

    def __init__(self, root: Path, config: ArchiveConfig) -> None:
        self._root = root.resolve()
        self._compression = _compression(config)
        if self._root.exists() and not self._root.is_dir():
            raise ArchiveLocationError(f"--out {root} is a file, not a folder")
        self._made_dirs(self._root)

    def describe(self) -> str:
        return str(self._root)

    def _made_dirs(self, folder: Path) -> None:
        """Create ``folder`` and its missing parents, each made durable in its parent."""
        missing = []
        probe = folder
        while not probe.exists():
            missing.append(probe)
            probe = probe.parent
        for created in reversed(missing):
            created.mkdir(exist_ok=True)
            _fsync_directory(created.parent)

    def list_files(self, directory: str) -> list[str]:
        folder = self._root / directory
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith((".", "_")))

    def read(self, directory: str, name: str) -> pa.Table:
        return pq.read_table(self._root / directory / name)

    def write(self, directory: str, file: FileName, table: pa.Table) -> None:
        folder = self._root / directory
        self._made_dirs(folder)
        temporary = folder / file.temporary(uuid.uuid4().hex[:12])
        try:
            with open(temporary, "wb") as handle:
                pq.write_table(table, handle, compression=self._compression)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, folder / file.name)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        _fsync_directory(folder)

    def remove(self, directory: str, names: list[str]) -> None:
        folder = self._root / directory
        for name in names:
            (folder / name).unlink(missing_ok=True)
        _fsync_directory(folder)


class FileSystemStore:
    """The dataset under a path of a pyarrow file system (an object store)."""

    def __init__(self, filesystem: pafs.FileSystem, root: str, config: ArchiveConfig, url: str | None = None) -> None:
        self._fs = filesystem
        self._root = root.rstrip("/")
        self._compression = _compression(config)
        self._url = url or f"{filesystem.type_name}:{root}"

    def describe(self) -> str:
        return self._url

    def _path(self, directory: str, name: str | None = None) -> str:
        return "/".join(p for p in (self._root, directory, name) if p)

    def list_files(self, directory: str) -> list[str]:
        selector = pafs.FileSelector(self._path(directory), allow_not_found=True)
        names = [info.base_name for info in self._fs.get_file_info(selector) if info.type == pafs.FileType.File]
        return sorted(n for n in names if not n.startswith((".", "_")))

    def read(self, directory: str, name: str) -> pa.Table:
        return pq.read_table(self._path(directory, name), filesystem=self._fs)

    def write(self, directory: str, file: FileName, table: pa.Table) -> None:
        self._fs.create_dir(self._path(directory), recursive=True)  # a no-op on object stores
        with self._fs.open_output_stream(self._path(directory, file.name)) as stream:
            pq.write_table(table, stream, compression=self._compression)
        # closing completed the upload (or raised): the object is whole and durable now

    def remove(self, directory: str, names: list[str]) -> None:
        for name in names:
            try:
                self._fs.delete_file(self._path(directory, name))
            except FileNotFoundError:
                pass


def open_store(out: str, config: ArchiveConfig) -> DatasetStore:
    """The store for ``--out``: a local folder (a path or ``file://``), else any URL pyarrow opens."""
    scheme = urlsplit(out).scheme if "://" in out else ""
    if not scheme:
        return LocalStore(Path(out), config)
    if scheme == "file":
        return LocalStore(Path(urlsplit(out).path), config)
    try:
        filesystem, root = pafs.FileSystem.from_uri(out)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        raise ArchiveLocationError(f"--out {out}: pyarrow cannot open it ({str(exc).splitlines()[0]})") from exc
    parts = urlsplit(out)  # for log lines: no query (endpoint options) and no user information
    return FileSystemStore(filesystem, root, config, f"{parts.scheme}://{parts.hostname or ''}{parts.path}")
