"""Typed TOML configuration: dataclasses in, one-line errors out.

Every configuration file of siplab (router, emulator node, lab topology) is a tree of frozen
dataclasses. :func:`load_section` walks a parsed TOML table against a dataclass, checks every field's
type, refuses unknown keys (a typo must not be silently ignored), applies defaults and runs the
dataclass's own ``__post_init__`` checks. Whatever is wrong comes back as :class:`ConfigError`
naming the file, the dotted field and the reason, e.g.::

    router.toml: dispatcher.probing.interval: expected a number, got 'ten'
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration problem: ``file: field: reason``."""

    def __init__(self, file: str, field: str, reason: str) -> None:
        self.file = file
        self.field = field
        self.reason = reason
        where = f"{file}: {field}" if field else file
        super().__init__(f"{where}: {reason}")


class FieldError(ValueError):
    """Raised by ``__post_init__`` checks: names the field inside the dataclass."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


def read_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        with p.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(str(p), "", "file not found") from None
    except PermissionError:
        raise ConfigError(str(p), "", "permission denied") from None
    except IsADirectoryError:
        raise ConfigError(str(p), "", "is a directory, expected a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(p), "", f"invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(p), "", "not UTF-8 text") from None


def load_file(path: str | Path, cls: type[T]) -> T:
    """Read ``path`` and build ``cls`` from it."""
    return load_section(read_toml(path), cls, file=str(path))


def load_section(data: Any, cls: type[T], *, file: str = "<config>", prefix: str = "") -> T:
    """Build dataclass ``cls`` from a TOML table, or raise :class:`ConfigError`."""
    return typing.cast(T, _convert(data, cls, file, prefix))


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "nothing"
    if isinstance(tp, type):
        return {
            "str": "a string",
            "int": "an integer",
            "float": "a number",
            "bool": "true or false",
        }.get(
            tp.__name__, f"a table ({tp.__name__})" if dataclasses.is_dataclass(tp) else tp.__name__
        )
    return str(tp)


def _convert(value: Any, tp: Any, file: str, field: str) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors: list[ConfigError] = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, file, field)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        names = " or ".join(_type_name(o) for o in options if o is not type(None))
        raise ConfigError(file, field, f"expected {names}, got {value!r}")
    if origin is typing.Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(
                file, field, f"must be one of {', '.join(map(repr, allowed))}, got {value!r}"
            )
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(file, field, f"expected a list, got {value!r}")
        args = get_args(tp)
        item_tp = args[0] if args else Any
        items = [_convert(v, item_tp, file, f"{field}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(file, field, f"expected a table, got {value!r}")
        _, val_tp = get_args(tp) or (str, Any)
        return {str(k): _convert(v, val_tp, file, f"{field}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _convert_dataclass(value, tp, file, field)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(file, field, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(file, field, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(file, field, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(file, field, f"expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(file, field, f"expected {_type_name(tp)}, got {value!r}")


def _convert_dataclass(value: Any, cls: type[Any], file: str, field: str) -> Any:
    if not isinstance(value, dict):
        raise ConfigError(file, field, f"expected a table, got {value!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    # TOML keys may use dashes; Python fields use underscores.
    kwargs: dict[str, Any] = {}
    for key, raw in value.items():
        name = key.replace("-", "_")
        sub = f"{field}.{key}" if field else key
        if name not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(file, sub, f"unknown setting (known here: {known})")
        kwargs[name] = _convert(raw, hints[name], file, sub)
    for name, f in fields.items():
        if name in kwargs:
            continue
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(
                file, f"{field}.{name}" if field else name, "required setting is missing"
            )
    try:
        return cls(**kwargs)
    except FieldError as exc:
        raise ConfigError(
            file, f"{field}.{exc.field}" if field else exc.field, exc.reason
        ) from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(file, field or cls.__name__, str(exc)) from None
