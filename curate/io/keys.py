"""Sample keys: they become file names inside tars and folders, so they are sanitised here, once."""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
MAX_KEY_LEN = 128


def sanitize_key(raw: object) -> str | None:
    """A file-name-safe key ([A-Za-z0-9_-], at most 128 chars), or None when nothing usable is left.

    `../../etc/passwd` becomes `______etc_passwd`; NUL bytes, slashes, dots and spaces all become `_`. Dots
    matter too: webdataset splits a member name at its first dot.
    """
    if raw is None:
        return None
    text = str(raw)
    if not text.strip():
        return None
    return _UNSAFE.sub("_", text)[:MAX_KEY_LEN]


def generated_key(shard_index: int, row: int) -> str:
    return f"{shard_index:05d}{row:07d}"
