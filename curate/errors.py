"""Errors that reach the user as one clear line (Click prints them without a traceback)."""

from __future__ import annotations

import click


class CurateError(click.ClickException):
    """Bad input or an unusable environment: printed as `Error: <message>`, exit code 2."""

    exit_code = 2


class SchemaError(CurateError):
    """A table does not match its documented schema (names the file and the column)."""
