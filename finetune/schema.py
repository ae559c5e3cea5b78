"""Nested dataclass configs from YAML: inheritance, ``key.sub=value`` overrides, typed and validated once.

A config class is a frozen dataclass whose fields carry their help text in ``metadata["help"]``
and may themselves be config dataclasses. :func:`build_config` turns a plain dict (read from YAML,
with overrides applied) into an instance: each value is coerced to its field's type, an unknown
key raises a ``ValueError`` that names the close ones (``difflib``) among every dotted key, and
each class's ``__post_init__`` checks its values with messages that name the allowed ones.

YAML files may start from another recipe with ``inherit: NAME`` (a path relative to the file, or
a built-in recipe of ``finetune/configs/``); the child's keys are merged into the parent's, dict
by dict. Nothing here knows the fine-tuning fields: :mod:`hoi_mllm.finetune.config` declares them.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

INHERIT_KEYS = ("inherit", "base")


class ConfigError(ValueError):
    """A config file, key or value is invalid; the message names the key and what is allowed."""


# --------------------------------------------------------------------------- reading YAML
def help_field(text: str, **kw):
    """A dataclass field with its ``--help-config`` text (``default=`` / ``default_factory=`` as for ``field``)."""
    return dataclasses.field(metadata={"help": text}, **kw)


def read_yaml(path: str | Path, recipes_dir: Path | None = None, _chain: tuple[Path, ...] = ()) -> dict:
    """Read a YAML recipe, resolving ``inherit:`` (or ``base:``) recursively, and return the merged dict."""
    path = resolve_recipe(path, recipes_dir)
    if path in _chain:
        raise ConfigError(f"recipe inheritance loops: {' -> '.join(str(p) for p in (*_chain, path))}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of keys, got {type(data).__name__}")
    parents = [data.pop(k) for k in INHERIT_KEYS if k in data]
    if len(parents) > 1:
        raise ConfigError(f"{path}: use one of {', '.join(INHERIT_KEYS)}, not both")
    if parents:
        parent = parents[0]
        local = path.parent / str(parent)
        base = read_yaml(local if local.exists() else parent, recipes_dir, (*_chain, path))
        data = deep_merge(base, data)
    return data


def resolve_recipe(name: str | Path, recipes_dir: Path | None = None) -> Path:
    """A recipe path, or the name of a built-in recipe (``hico_det``, ``synthetic.yaml``, ...)."""
    path = Path(name)
    if path.is_file():
        return path.resolve()
    if recipes_dir is not None:
        stem = path.name[:-5] if path.name.endswith(".yaml") else path.name
        builtin = recipes_dir / f"{stem}.yaml"
        if builtin.is_file() and path.parent == Path("."):
            return builtin.resolve()
        names = sorted(p.stem for p in recipes_dir.glob("*.yaml") if not p.stem.startswith("accelerate_"))
        close = difflib.get_close_matches(stem, names, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise FileNotFoundError(f"recipe {str(name)!r} not found: no such file and not a built-in recipe; "
                                f"built-in: {', '.join(names)}.{hint}")
    raise FileNotFoundError(f"recipe file not found: {name}")


def deep_merge(base: dict, update: dict) -> dict:
    """``update`` merged into a copy of ``base``: dicts merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_overrides(data: dict, overrides: dict[str, Any]) -> dict:
    """Set ``{"a.b.c": value}`` into a copy of the nested ``data`` (intermediate dicts created)."""
    out = deep_merge(data, {})
    for dotted, value in overrides.items():
        parts = [p for p in str(dotted).split(".") if p]
        if not parts:
            raise ConfigError(f"empty override key {dotted!r}")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        node[parts[-1]] = value
    return out


# --------------------------------------------------------------------------- building dataclasses
def config_keys(cls: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field]]:
    """Every dotted key of a config class (nested classes expanded) with its field."""
    hints = _hints(cls)
    for f in fields(cls):
        key = f"{prefix}{f.name}"
        sub = _dataclass_type(hints[f.name])
        if sub is not None:
            yield from config_keys(sub, key + ".")
        else:
            yield key, f


def describe(cls: type) -> list[tuple[str, str, str]]:
    """``(dotted key, default, help)`` of every leaf key, for ``--help-config``.

    Help comes from ``metadata["help"]``, else from the owning class's docstring ``Attributes:``
    section (the form of the foundation's configs, e.g. ``PairProposalConfig``).
    """
    out = []
    owners = dict(_owners(cls))
    for key, f in config_keys(cls):
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else "(required)")
        text = f.metadata.get("help") or docstring_help(owners[key]).get(f.name, "")
        out.append((key, repr(default), text))
    return out


def _owners(cls: type, prefix: str = ""):
    hints = _hints(cls)
    for f in fields(cls):
        sub = _dataclass_type(hints[f.name])
        if sub is not None:
            yield from _owners(sub, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", cls


def docstring_help(cls: type) -> dict[str, str]:
    """``name -> text`` from the ``Attributes:`` section of a class docstring (``a, b: text`` names both)."""
    doc = (cls.__doc__ or "").splitlines()
    out: dict[str, str] = {}
    inside, current = False, []
    for line in doc:
        stripped = line.strip()
        if stripped == "Attributes:":
            inside = True
            continue
        if not inside:
            continue
        if not stripped:
            break
        head, sep, text = stripped.partition(": ")
        names = [n.strip() for n in head.split(",")]
        if sep and all(n.isidentifier() for n in names):
            current = names
            for n in names:
                out[n] = text.strip()
        elif current:
            for n in current:
                out[n] += " " + stripped
    return out


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _dataclass_type(annotation):
    return annotation if isinstance(annotation, type) and is_dataclass(annotation) else None


def _unknown_key(key: str, root: type, prefix: str, allowed: list[str]) -> ConfigError:
    every = [k for k, _ in config_keys(root)]
    full = f"{prefix}{key}"
    close = difflib.get_close_matches(full, every, n=3, cutoff=0.6)
    close += [k for k in every if k.endswith("." + key) and k not in close][:3]
    close += [k for k in difflib.get_close_matches(key, every, n=2, cutoff=0.6) if k not in close]
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return ConfigError(f"unknown config key {full!r}; keys here: {', '.join(allowed)}.{hint}")


def build_config(cls: type, data: dict | None, root: type | None = None, prefix: str = ""):
    """A ``cls`` instance from a nested dict; values coerced to the field types, unknown keys rejected."""
    root = root or cls
    data = dict(data or {})
    hints = _hints(cls)
    names = [f.name for f in fields(cls)]
    for key in data:
        if key not in names:
            raise _unknown_key(key, root, prefix, names)
    kwargs = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        key = f"{prefix}{f.name}"
        sub = _dataclass_type(hints[f.name])
        value = data[f.name]
        if sub is not None:
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise ConfigError(f"config key {key!r} is a section; give it a mapping of its keys, got {value!r}")
            kwargs[f.name] = build_config(sub, value, root, key + ".")
        else:
            kwargs[f.name] = coerce(value, hints[f.name], key)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:  # a check in __post_init__ of a class we do not own
        raise ConfigError(f"config section {prefix.rstrip('.') or cls.__name__!r}: {exc}") from exc


def coerce(value: Any, annotation, key: str):
    """``value`` as ``annotation`` (int, float, bool, str, Optional, list/tuple of those, dict, Literal)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~")):
            if type(None) in args:
                return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"config key {key!r}: bad value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"config key {key!r}: {value!r} not allowed; allowed: {', '.join(map(str, args))}")
        return value
    if origin in (list, tuple) or annotation in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} takes a list, got {value!r}")
        inner = args[0] if args else Any
        items = [coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin or annotation) is tuple else items
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r} takes a mapping, got {value!r}")
        return dict(value)
    if annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise ConfigError(f"config key {key!r} takes true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, (float, str)) and _is_int(value))):
            raise ConfigError(f"config key {key!r} takes an integer, got {value!r}")
        return int(float(value))
    if annotation is float:
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)  # YAML reads "1e-4" as a string; float() takes it
        except (TypeError, ValueError):
            raise ConfigError(f"config key {key!r} takes a number, got {value!r}") from None
    if annotation is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"config key {key!r} takes a string, got {value!r}")
        return str(value)
    return value


def _is_int(value) -> bool:
    try:
        return float(value) == int(float(value))
    except (TypeError, ValueError):
        return False


def to_dict(config) -> dict:
    """A config instance as a plain nested dict (tuples as lists), ready for YAML."""
    def plain(x):
        if is_dataclass(x):
            return {f.name: plain(getattr(x, f.name)) for f in fields(x)}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        return x

    return plain(config)


def check_choice(value, allowed, key: str) -> None:
    """Raise :class:`ConfigError` naming the allowed values (and the close ones) when ``value`` is not one."""
    if value not in allowed:
        close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=2)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"config key {key!r}: {value!r} not allowed; allowed: "
                          f"{', '.join(str(a) for a in allowed)}.{hint}")


def check_range(value, key: str, low=None, high=None, low_open: bool = False, high_open: bool = False) -> None:
    """Raise :class:`ConfigError` when ``value`` leaves ``[low, high]`` (open ends as asked)."""
    bad = ((low is not None and (value < low or (low_open and value == low)))
           or (high is not None and (value > high or (high_open and value == high))))
    if bad:
        lo = "-inf" if low is None else f"{'(' if low_open else '['}{low}"
        hi = "inf" if high is None else f"{high}{')' if high_open else ']'}"
        raise ConfigError(f"config key {key!r}: {value!r} outside {lo}, {hi}")
