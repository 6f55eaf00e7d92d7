"""Paths through fsspec: listing input shards, opening files, and atomic commits of finished outputs."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import fsspec
from fsspec.core import url_to_fs

from curate.errors import CurateError


def cache_dir() -> Path:
    """Where curate keeps what it derives once per machine and reuses across runs (exported ONNX models, the
    WordNet word list): `$CURATE_CACHE`, default ~/.cache/curate."""
    return Path(os.environ.get("CURATE_CACHE", Path.home() / ".cache" / "curate"))


def file_mode() -> int:
    """The mode a new file gets under this process's umask (0644 under umask 022). mkstemp makes its files 0600
    whatever the umask, so every atomic write sets this on its temp file: a training job or web server running
    as another user must be able to read what curate wrote."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            umask = next(int(ln.split()[1], 8) for ln in f if ln.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        umask = os.umask(0o022)  # no /proc: read it by setting it, and put it back at once
        os.umask(umask)
    return 0o666 & ~umask


def mkstemp_like_open(directory: str, prefix: str = ".tmp-", suffix: str = "") -> tuple[int, str]:
    """tempfile.mkstemp whose file has the mode open() would give it."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=suffix)
    os.fchmod(fd, file_mode())
    return fd, tmp


def is_local(path: str) -> bool:
    fs, _ = url_to_fs(path)
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def list_shards(source: str | list[str], suffix: str = ".parquet") -> list[str]:
    """Input shards from a folder, a glob, a single file or an fsspec URL, in sorted order.

    Raises CurateError when nothing matches, naming what was looked for.
    """
    sources = [source] if isinstance(source, str) else list(source)
    found: list[str] = []
    for src in sources:
        fs, path = url_to_fs(src)
        proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        prefix = "" if proto in ("file", "local") else f"{proto}://"

        def unstrip(p: str, prefix: str = prefix) -> str:
            return prefix + p

        if any(ch in path for ch in "*?["):
            matches = sorted(fs.glob(path))
            found += [unstrip(m) for m in matches if not fs.isdir(m)]
        elif fs.isdir(path):
            matches = sorted(
                p for p in fs.find(path, maxdepth=1) if p.endswith(suffix) and not Path(p).name.startswith((".", "_"))
            )
            if not matches:
                raise CurateError(f"{src}: no {suffix} files in this folder")
            found += [unstrip(m) for m in matches]
        elif fs.exists(path):
            found.append(unstrip(path))
        else:
            raise CurateError(f"{src}: no such file or folder")
    if not found:
        raise CurateError(f"{', '.join(sources)}: no input shards found")
    return found


def ensure_dir(path: str) -> None:
    fs, p = url_to_fs(path)
    fs.makedirs(p, exist_ok=True)


def exists(path: str) -> bool:
    fs, p = url_to_fs(path)
    return fs.exists(p)


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def commit_file(local_tmp: str, final: str) -> None:
    """Move a finished local temp file to its final place: os.replace locally, one upload to object stores."""
    if is_local(final):
        _, p = url_to_fs(final)
        os.makedirs(os.path.dirname(p) or ".", exist_ok=True)
        os.replace(local_tmp, p)
    else:
        fs, p = url_to_fs(final)
        fs.put_file(local_tmp, p)
        os.unlink(local_tmp)


def _finite(obj: Any) -> Any:  # noqa: ANN401
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json_atomic(path: str, obj: Any) -> None:
    """Write JSON via a temp file and a rename, so readers never see half a file. NaN and infinities become
    null: they are not JSON, and browsers' and most languages' parsers reject them."""
    data = json.dumps(_finite(obj), indent=2, sort_keys=True, default=str, allow_nan=False).encode("utf-8")
    if is_local(path):
        _, p = url_to_fs(path)
        d = os.path.dirname(p) or "."
        os.makedirs(d, exist_ok=True)
        fd, tmp = mkstemp_like_open(d, suffix=".json")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, p)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    else:
        with fsspec.open(path, "wb") as f:
            f.write(data)


@contextmanager
def atomic_local(path: str) -> Iterator[str]:
    """A temp file beside local `path` to write; renamed onto `path` if the block succeeds, removed if not."""
    _, p = url_to_fs(path)
    d = os.path.dirname(p) or "."
    os.makedirs(d, exist_ok=True)
    fd, tmp = mkstemp_like_open(d, suffix=os.path.splitext(p)[1])
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def stamp(path: str) -> tuple[int, int] | None:
    """(mtime_ns, size) of a local file, or None: part of a per-process cache key, so that a long-lived worker
    (a Dask worker serving several runs) never reuses what it read from a file that was rewritten since."""
    try:
        st = os.stat(url_to_fs(path)[1])
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


@contextmanager
def atomic_dir(path: str) -> Iterator[str]:
    """A fresh `path.tmp` folder to fill; it replaces local folder `path` if the block succeeds. A kill leaves
    either the old folder or none (and a `.tmp` the next call clears), never a half-written one."""
    tmp = path + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        yield tmp
        mode = file_mode()  # what libraries wrote in it gets the umask's mode too (safetensors files come 0600)
        for base, _, files in os.walk(tmp):
            for name in files:
                os.chmod(os.path.join(base, name), mode)
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_bytes_atomic(path: str, data: bytes) -> None:
    with atomic_local(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_arrays_atomic(path: str, **arrays: Any) -> None:  # noqa: ANN401 (numpy arrays)
    """A .npy file (one array) or a .npz file (several, by name), written atomically: a retried Dask task
    replaces it whole."""
    import numpy as np

    with atomic_local(path) as tmp, open(tmp, "wb") as f:
        if path.endswith(".npz"):
            np.savez(f, **arrays)
        else:
            (array,) = arrays.values()
            np.save(f, array, allow_pickle=False)


def write_text_atomic(path: str, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_parquet_atomic(table: Any, path: str, compression: str = "zstd") -> None:  # noqa: ANN401 (a pyarrow Table)
    """`compression="none"` for a work file read back at once and thrown away (no dictionaries or statistics
    either: they only cost time there)."""
    import pyarrow.parquet as pq

    with atomic_local(path) as tmp:
        if compression == "none":
            pq.write_table(table, tmp, compression="none", use_dictionary=False, write_statistics=False)
        else:
            pq.write_table(table, tmp, compression=compression)


def read_json(path: str) -> Any:
    with fsspec.open(path, "rb") as f:
        return json.loads(f.read().decode("utf-8"))
