"""Atomic, line-checked JSONL and JSON I/O shared by every stage."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Sequence

from nemo_recipes.errors import UserError


def make_shareable(path_or_fd: str | os.PathLike | int, directory: bool = False) -> None:
    """Give a temporary file (0600) or folder (0700) the mode a plain open() or mkdir() would have given it under
    this process's umask, before it is renamed into place: results on a shared disk are for the whole group."""
    mode = (0o777 if directory else 0o666) & ~_umask()
    try:
        if isinstance(path_or_fd, int):
            os.fchmod(path_or_fd, mode)
        else:
            os.chmod(path_or_fd, mode)
    except OSError:  # a file system that refuses chmod (some ACL, SMB or FUSE mounts): keep what it gave
        pass


def link_or_copy(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """A hard link to `source` at `destination` (no bytes copied), or a copy where the file system refuses one
    (another device, or links not allowed); shutil.copytree's copy_function."""
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def _umask() -> int:
    """This process's umask, read without setting it (os.umask sets it for every thread, for a moment)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """A file to write `path` through: readers see the old file or the whole new one, never a prefix.

    The data goes to a temporary file beside `path`, is fsynced, and replaces `path` only if the block succeeds.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    make_shareable(fd)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg}).") from None


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Atomically write one JSON object per line; returns the number of records."""
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def iter_jsonl(path: str | os.PathLike, required_keys: Sequence[str] = ()) -> Iterator[dict]:
    """Yield the objects of a JSONL file, naming the file, line and key of the first bad line."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found.")
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                yield parse_jsonl_line(line, path, lineno, required_keys)


def parse_jsonl_line(line: str, path: str | os.PathLike, lineno: int, required_keys: Sequence[str] = ()) -> dict:
    """One JSONL line as a dict, or a UserError naming the file, line and key at fault."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{lineno}: not valid JSON ({e.msg}).") from None
    if not isinstance(record, dict):
        raise UserError(f"{path}:{lineno}: expected a JSON object, found {type(record).__name__}.")
    for key in required_keys:
        if key not in record:
            raise UserError(f"{path}:{lineno}: missing key '{key}'.")
    return record


def read_jsonl(path: str | os.PathLike, required_keys: Sequence[str] = ()) -> list[dict]:
    return list(iter_jsonl(path, required_keys))


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()
