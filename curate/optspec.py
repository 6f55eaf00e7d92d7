"""How a stage declares its options once, and what is derived from that declaration.

A stage's options are the fields of one frozen dataclass (see curate/config.py); each field is made with
`option(...)`, which records its help, choices and role. From that one declaration come:

- the Click command's arguments and options (`click_options`, `from_cli`): same names, same defaults;
- the pipeline loader (`from_mapping`): YAML values checked and coerced by the same rules, every problem
  reported as one line naming the key;
- the options a stage records for resume (`recorded`): every field but paths and how the run is executed;
- the JSON Schema of a stage's mapping in a pipeline file (`json_schema`).

Roles: `input` paths must exist (or be made by an earlier pipeline stage), `output` paths are written,
`run` options say how the work is executed (workers, overwrite, progress) and do not change the result, so
they are not recorded. Lists accept a list or a comma-separated string alike.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

import click

REQUIRED: Any = dataclasses.MISSING
ROLES = ("option", "input", "output", "run")


class OptionError(ValueError):
    """A value that does not fit its option; the message says what was expected."""


def option(default: Any = REQUIRED, help: str = "", *, choices: tuple[str, ...] = (), role: str = "option",  # noqa: A002, ANN401
           argument: bool = False, flag: str | None = None, metavar: str | None = None,
           cli: bool = True) -> Any:  # noqa: ANN401
    """A field of a stage's options. `argument`: positional on the command line; `flag`: the Click spelling of
    a boolean (default `--name/--no-name`); `cli=False`: pipeline files only (e.g. the serve step's port)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    meta = {"help": help, "choices": tuple(choices), "role": role, "argument": argument, "flag": flag,
            "metavar": metavar, "cli": cli}
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable defaults: use a tuple (lists) or a frozen mapping")
    if default is REQUIRED:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class Spec:
    """One option as the CLI, the loader and the schema see it."""

    name: str
    kind: str  # int, float, str, bool, list (of str), numbers (list of float), map (str -> str)
    optional: bool  # None is a value
    default: Any
    required: bool
    help: str
    choices: tuple[str, ...]
    role: str
    argument: bool
    flag: str | None
    metavar: str | None
    cli: bool

    @property
    def cli_name(self) -> str:
        return "--" + self.name.replace("_", "-")


def _kind(tp: Any) -> tuple[str, bool]:  # noqa: ANN401
    optional = False
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) != len(typing.get_args(tp))
        if len(args) != 1:
            raise TypeError(f"unsupported option type {tp!r}")
        tp, origin = args[0], typing.get_origin(args[0])
    if tp in (int, float, str, bool):
        return tp.__name__, optional
    if origin is tuple and typing.get_args(tp) == (str, ...):
        return "list", optional
    if origin is tuple and typing.get_args(tp) == (float, ...):
        return "numbers", optional
    if origin is tuple and typing.get_args(tp) == (tuple[str, str], ...):
        return "map", optional
    raise TypeError(f"unsupported option type {tp!r}")


def specs(cls: type) -> tuple[Spec, ...]:
    """The options of a stage's dataclass, in declaration order."""
    return _specs(cls)


@functools.cache
def _specs(cls: type) -> tuple[Spec, ...]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        kind, optional = _kind(hints[f.name])
        m = f.metadata
        required = f.default is dataclasses.MISSING
        out.append(Spec(f.name, kind, optional, None if required else f.default, required, m.get("help", ""),
                        m.get("choices", ()), m.get("role", "option"), m.get("argument", False), m.get("flag"),
                        m.get("metavar"), m.get("cli", True)))
    return tuple(out)


def _type_name(spec: Spec) -> str:
    names = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
             "list": "a list (or a comma-separated string)",
             "numbers": "a list of numbers (or a comma-separated string)", "map": "a mapping of names (or a list of OLD=NEW)"}
    return names[spec.kind] + (" or null" if spec.optional else "")


def coerce(spec: Spec, value: Any) -> Any:  # noqa: ANN401
    """`value` as the option's type, or OptionError. The one rule for YAML values and command-line strings."""
    if value is None:
        if spec.optional:
            return None
        raise OptionError(f"must be {_type_name(spec)}, not null")
    k = spec.kind
    if k == "bool":
        if not isinstance(value, bool):
            raise OptionError(f"must be true or false, not {value!r}")
        return value
    if k == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise OptionError(f"must be an integer, not {value!r}")
        return value
    if k == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OptionError(f"must be a number, not {value!r}")
        return float(value)
    if k == "str":
        if not isinstance(value, str):
            raise OptionError(f"must be a string, not {value!r}")
        if spec.choices and value not in spec.choices:
            raise OptionError(_choice_message(value, spec.choices))
        return value
    if k == "list":
        if isinstance(value, str):
            items = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            items = [v.strip() for v in value if v.strip()]
        else:
            raise OptionError(f"must be a list of strings (or a comma-separated string), not {value!r}")
        bad = [v for v in items if spec.choices and v not in spec.choices]
        if bad:
            raise OptionError(_choice_message(bad[0], spec.choices))
        return tuple(items)
    if k == "numbers":
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise OptionError(f"must be a list of numbers (or a comma-separated string), not {value!r}")
        out = []
        for v in items:
            try:
                if isinstance(v, bool):
                    raise ValueError
                out.append(float(v.strip()) if isinstance(v, str) else float(v))
            except (TypeError, ValueError):
                raise OptionError(f"must be a list of numbers, and {v!r} is not a number") from None
        return tuple(out)
    if k == "map":
        return _coerce_map(value)
    raise AssertionError(k)


def _coerce_map(value: Any) -> tuple[tuple[str, str], ...]:  # noqa: ANN401
    pairs: list[tuple[str, str]] = []
    if isinstance(value, Mapping):
        for a, b in value.items():
            if not isinstance(a, str) or not isinstance(b, str):
                raise OptionError(f"names must be strings, not {a!r}: {b!r}")
            pairs.append((a, b))
    elif isinstance(value, (list, tuple, str)):
        for item in [value] if isinstance(value, str) else value:
            if isinstance(item, (list, tuple)) and len(item) == 2 and all(isinstance(x, str) for x in item):
                pairs.append((item[0], item[1]))
                continue
            if not isinstance(item, str) or item.count("=") != 1 or not all(p.strip() for p in item.split("=")):
                raise OptionError(f"expected OLD=NEW, got {item!r}")
            a, b = item.split("=")
            pairs.append((a.strip(), b.strip()))
    else:
        raise OptionError(f"must be a mapping of names (or a list of OLD=NEW), not {value!r}")
    return tuple(pairs)


def _choice_message(value: str, choices: tuple[str, ...]) -> str:
    near = difflib.get_close_matches(value, choices, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return f"{value!r} is not one of {', '.join(choices)}{hint}"


def suggest(name: str, known: list[str]) -> str:
    near = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean {near[0]!r}?)" if near else ""


def _coerce_mapping(cls: type, mapping: Mapping[str, Any], root: str | None = None
                    ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """({name: value} for the keys that fit, [(key, problem)] for the others and for missing required keys).
    Paths are taken relative to `root` unless absolute or URLs."""
    problems: list[tuple[str, str]] = []
    by_name = {s.name: s for s in specs(cls)}
    values: dict[str, Any] = {}
    for key, value in mapping.items():
        if not isinstance(key, str) or key not in by_name:
            problems.append((str(key), "unknown option" + suggest(str(key), list(by_name))))
            continue
        spec = by_name[key]
        try:
            value = coerce(spec, value)
        except OptionError as err:
            problems.append((key, str(err)))
            continue
        if spec.role in ("input", "output") and root is not None and value is not None:
            value = resolve(root, value)
        values[key] = value
    for spec in by_name.values():
        if spec.required and spec.name not in values and spec.name not in {p[0] for p in problems}:
            problems.append((spec.name, "is required"))
    return values, problems


def from_mapping(cls: type, mapping: Mapping[str, Any], root: str | None = None,
                 check_paths: Callable[[dict[str, Any]], list[tuple[str, str]]] | None = None
                 ) -> tuple[Any, list[tuple[str, str]]]:
    """(options object or None, [(key, problem)]) from a pipeline stage's mapping; every problem is reported,
    not only the first. `check_paths` sees the coerced values (paths resolved) and adds its problems."""
    values, problems = _coerce_mapping(cls, mapping, root)
    if check_paths is not None:
        problems += check_paths(values)
    if problems:
        return None, problems
    obj = cls(**values)
    problems = check(obj)
    return (None if problems else obj), problems


def check(obj: Any) -> list[tuple[str, str]]:  # noqa: ANN401
    """Problems between options (a `problems()` method of the options class), as (key, problem)."""
    fn = getattr(obj, "problems", None)
    return list(fn()) if fn else []


def ensure_valid(obj: Any) -> None:  # noqa: ANN401
    """Raise CurateError for the first problem between options (stages call it: Python callers skip the CLI)."""
    from curate.errors import CurateError

    problems = check(obj)
    if problems:
        key, msg = problems[0]
        raise CurateError(f"{key}: {msg}")


def resolve(root: str, value: Any) -> Any:  # noqa: ANN401
    """A path (or a tuple of paths) relative to the pipeline root, unless absolute or a URL."""
    if isinstance(value, tuple):
        return tuple(resolve(root, v) for v in value)
    return value if os.path.isabs(value) or "://" in value else os.path.join(root, value)


def recorded(obj: Any) -> dict[str, Any]:  # noqa: ANN401
    """The options a stage's result depends on, as JSON values (lists for tuples): what resume compares. Output
    paths and execution are left out, and so are lists of input shards (the executor numbers those itself, so
    that a rerun can add shards)."""
    return {s.name: _jsonable(getattr(obj, s.name)) for s in specs(type(obj))
            if s.role == "option" or (s.role == "input" and s.kind != "list")}


def as_dict(obj: Any) -> dict[str, Any]:  # noqa: ANN401
    """Every option, as JSON values."""
    return {s.name: _jsonable(getattr(obj, s.name)) for s in specs(type(obj))}


def _jsonable(value: Any) -> Any:  # noqa: ANN401
    if isinstance(value, tuple):
        if value and all(isinstance(v, tuple) for v in value):
            return {a: b for a, b in value}
        return list(value)
    return value


def from_recorded(cls: type, record: Mapping[str, Any], **changes: Any) -> Any:  # noqa: ANN401
    """Options rebuilt from what a stage recorded (its _stage.json), with `changes`; names the record no longer
    knows are left at their defaults, names this curate does not know are ignored."""
    names = {s.name: s for s in specs(cls)}
    values = {}
    for k, v in record.items():
        if k in names:
            try:
                values[k] = coerce(names[k], v)
            except OptionError:
                continue
    return cls(**{**values, **changes})


# --- the command line ---------------------------------------------------------------------------------------

def _default_text(spec: Spec) -> Any:  # noqa: ANN401
    if spec.kind in ("list", "numbers"):
        return ",".join(str(v) for v in spec.default or ())
    if spec.kind == "map":
        return tuple(f"{a}={b}" for a, b in spec.default or ())
    return spec.default


def click_options(cls: type, *, skip: tuple[str, ...] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a Click command with every option of `cls` (arguments first, in order)."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        ordered = sorted(specs(cls), key=lambda s: s.role == "run")  # how it runs after what it does
        for spec in reversed(ordered):
            if not spec.cli or spec.name in skip:
                continue
            fn = _click_param(spec)(fn)
        return fn

    return decorate


def _click_param(spec: Spec) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    if spec.argument:
        if spec.kind == "list":
            return click.argument(spec.name, nargs=-1, required=spec.required)
        return click.argument(spec.name, required=spec.required)
    help_ = spec.help
    if spec.choices and spec.kind == "list":
        help_ = f"{help_} Comma-separated: {', '.join(spec.choices)}.".strip()
    kw: dict[str, Any] = {"help": help_, "show_default": spec.default not in (None, (), "")}
    if spec.required:
        kw["required"] = True
    else:
        kw["default"] = _default_text(spec)
    if spec.kind == "bool":
        decls = spec.flag or f"{spec.cli_name}/--no-{spec.cli_name[2:]}"
        if "/" not in decls:
            kw["is_flag"] = True
        return click.option(decls, spec.name, **kw)
    if spec.kind == "map":
        return click.option(spec.cli_name, spec.name, multiple=True, metavar=spec.metavar or "OLD=NEW", **kw)
    if spec.kind in ("list", "numbers"):
        return click.option(spec.cli_name, spec.name, type=str, metavar=spec.metavar, **kw)
    types_ = {"int": int, "float": float, "str": click.Choice(list(spec.choices)) if spec.choices else str}
    return click.option(spec.cli_name, spec.name, type=types_[spec.kind], metavar=spec.metavar, **kw)


def from_cli(cls: type, params: Mapping[str, Any], **fixed: Any) -> Any:  # noqa: ANN401
    """The options object from a Click command's parameters (the same coercion as pipeline files)."""
    values = {}
    for spec in specs(cls):
        if spec.name in fixed or spec.name not in params:
            continue
        value = params[spec.name]
        if spec.kind == "list" and spec.argument:
            value = tuple(value)
        if spec.kind == "map":
            value = list(value)
        try:
            values[spec.name] = coerce(spec, value)
        except OptionError as err:
            raise click.BadParameter(str(err), param_hint=spec.cli_name) from None
    obj = cls(**values, **fixed)
    problems = check(obj)
    if problems:
        key, msg = problems[0]
        raise click.UsageError(f"{key.replace('_', '-')}: {msg}")
    return obj


# --- JSON Schema --------------------------------------------------------------------------------------------

def json_schema(cls: type) -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) for one stage's mapping in a pipeline file."""
    props: dict[str, Any] = {}
    for spec in specs(cls):
        base: dict[str, Any]
        if spec.kind == "list":
            item: dict[str, Any] = {"type": "string"}
            if spec.choices:
                item["enum"] = list(spec.choices)
            text: dict[str, Any] = {"type": "string"}
            if spec.choices:  # a comma-separated string of the same choices
                one = "(" + "|".join(re.escape(c) for c in spec.choices) + ")"
                text["pattern"] = rf"^\s*({one}(\s*,\s*{one})*)?\s*$"
            base = {"anyOf": [{"type": "array", "items": item}, text]}
        elif spec.kind == "numbers":
            base = {"anyOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string"}]}
        elif spec.kind == "map":
            base = {"anyOf": [{"type": "object", "additionalProperties": {"type": "string"}},
                              {"type": "array", "items": {"type": "string", "pattern": "^[^=]+=[^=]+$"}}]}
        else:
            base = {"type": {"int": "integer", "float": "number", "str": "string", "bool": "boolean"}[spec.kind]}
            if spec.choices:
                base["enum"] = list(spec.choices)
        if spec.optional:
            base = {"anyOf": [base, {"type": "null"}]}
        base["description"] = spec.help
        if not spec.required:
            base["default"] = _jsonable(spec.default)
        props[spec.name] = base
    return {"type": "object", "additionalProperties": False, "properties": props,
            "required": [s.name for s in specs(cls) if s.required]}
