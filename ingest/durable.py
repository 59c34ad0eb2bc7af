"""Writes that are on disk when they return: every byte written, file and directory fsynced.

A file's fsync makes its data durable, not its name: after a power loss a file created
since the directory's last fsync may be missing, with the letters or batches in it already
acknowledged. So creating a file fsyncs its directory too.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written: it may write fewer than asked (signals, quotas,
    pipes), and a short write that went unnoticed would tear a record."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def fsync_dir(directory: Path) -> None:
    """Make the names in `directory` (a file just created, renamed or deleted) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dir(directory: Path) -> None:
    """mkdir -p, durably: a directory created here is fsynced into its parent."""
    if directory.is_dir():
        return
    directory.mkdir(parents=True, exist_ok=True)
    fsync_dir(directory.parent)


def open_append(path: Path) -> int:
    """Open `path` for appending, creating it (and fsyncing its directory) if it did not exist."""
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND)
    except FileNotFoundError:
        pass
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o640)
    except FileExistsError:  # created meanwhile by another process (an operator's replay)
        return os.open(path, os.O_WRONLY | os.O_APPEND)
    fsync_dir(path.parent)
    return fd


def append_durably(path: Path, data: bytes) -> None:
    """Append `data` to `path` and fsync; returns only when it is on disk."""
    fd = open_append(path)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
