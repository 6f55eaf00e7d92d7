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
        self._tar.write(sample)
        self.count += 1

    def close(self) -> None:
        self._tar.close()
        self._file.close()
