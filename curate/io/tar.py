"""Webdataset tars written deterministically (fixed mtime and owner, members in the order written)."""

from __future__ import annotations

import json
from typing import Any

import webdataset as wds


class SampleTarWriter:
    """`{key}.{ext}` members for each sample; values are bytes, str (UTF-8) or JSON-able objects (`.json`)."""

    def __init__(self, local_path: str) -> None:
        self._file = open(local_path, "wb")  # noqa: SIM115 (closed in close())
        self._tar = wds.TarWriter(self._file, encoder=False, mtime=0.0, user="curate", group="curate")
        self.count = 0

    def write(self, key: str, fields: dict[str, Any]) -> None:
        if "." in key or "/" in key or not key:
            raise ValueError(f"unsafe sample key {key!r}")
        sample: dict[str, Any] = {"__key__": key}
        for ext, value in fields.items():
            if isinstance(value, bytes):
                sample[ext] = value
            elif isinstance(value, str):
                sample[ext] = value.encode("utf-8")
            else:
                sample[ext] = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")
        try:
            self._tar.write(sample)
        except BaseException:
            self.abort()
            raise
        self.count += 1

    def close(self) -> None:
        try:
            self._tar.close()
        except BaseException:
            self.abort()
            raise
        self._file.close()

    def abort(self) -> None:
        """Drop a tar that failed mid-write (e.g. a full disk): close the file without the tar trailer, so
        nothing tries to finish it later (tarfile's __del__ would, and print a traceback)."""
        tar = getattr(self._tar, "tarstream", None)
        if tar is not None:
            tar.closed = True
            stream = getattr(tar, "fileobj", None)
            if stream is not None and hasattr(stream, "closed"):
                stream.closed = True  # tarfile's _Stream finishes itself in __del__ unless marked closed
        try:
            self._file.close()
        except OSError:
            pass  # the bytes it could not flush belong to a tar that is being dropped

    def __enter__(self) -> SampleTarWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
