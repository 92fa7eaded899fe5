"""Typed configuration: one frozen dataclass per verb and per node, the single source of truth.

Every field is declared with :func:`opt` (default + one-line help). From the same fields come

* the command line (:func:`add_fields` -> argparse options ``--field-name``, :func:`build`),
* the ROS parameters of a node (:func:`param_defaults`: ``(name, default)`` pairs that
  ``nodes/common.declare_config`` declares; :func:`from_params` builds the dataclass back),
* the resolved configuration a run writes next to its outputs (:func:`write_config`).

A config's ``validate()`` (called by :func:`build` / :func:`from_params`, before any file is
read) raises :class:`ConfigError` with a message that names the option. No rclpy here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path


class ConfigError(ValueError):
    """A configuration value that cannot be used (the message names the option)."""


def opt(default=dataclasses.MISSING, help: str = "", *, choices=None, aliases=(), positional=False,
        required=False, cli=True, const=None):
    """A config field: ``default``, one-line ``help``; ``choices`` restricts the value, ``aliases``
    are deprecated flag names still accepted, ``positional`` makes it a positional argument,
    ``required`` an option that must be given, ``cli=False`` keeps it off the command line,
    ``const`` the value of the option given without one (``--ray`` alone: ``--ray [ADDRESS]``)."""
    meta = {"help": help, "choices": choices, "aliases": tuple(aliases), "positional": positional,
            "required": required, "cli": cli, "const": const}
    return dataclasses.field(default=default, metadata=meta)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _base(tp):
    """(base type, is_sequence) of a field type: ``tuple[float, ...]`` -> (float, True)."""
    origin = typing.get_origin(tp)
    if origin in (tuple, list):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return (args[0] if args else str), True
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base(args[0])
    return tp, False


def cli_fields(cls, exclude=()) -> list:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", True) and f.name not in exclude]


def add_fields(parser: argparse.ArgumentParser, cls, exclude=(), rename=None, required=()) -> None:
    """One argparse option per field of ``cls`` (``--field-name``; same default and help).
    ``rename`` maps a field to another option name (for a config owned elsewhere whose field name
    clashes with this verb's vocabulary); ``required`` makes these fields required options."""
    hints = _hints(cls)
    rename = rename or {}
    for f in cli_fields(cls, exclude):
        base, seq = _base(hints[f.name])
        m = f.metadata
        kw = {"help": m.get("help", "").replace("%", "%%")}
        if m.get("aliases"):
            kw["help"] += " (deprecated: " + ", ".join(m["aliases"]) + ")"
        if m.get("choices"):
            kw["choices"] = list(m["choices"])
        default = f.default if f.default is not dataclasses.MISSING else None
        if base is bool and not seq:
            kw["action"] = argparse.BooleanOptionalAction if default else "store_true"
        else:
            kw["type"] = base
            if seq:
                kw["nargs"] = "+"
            elif m.get("const") is not None:
                kw.update(nargs="?", const=m["const"])
        if m.get("positional"):
            if seq and f.default is not dataclasses.MISSING:
                kw.update(nargs="*", default=default)
            parser.add_argument(f.name, **kw)
            continue
        if m.get("required") or f.name in required:
            kw["required"] = True
        else:
            kw["default"] = default
            kw["help"] += f" [default: {_show(default)}]"
        aliases = tuple(m.get("aliases", ()))
        if f.name in rename:  # the field's own name stays accepted
            aliases += (flag(f.name),)
            kw["help"] += f" (deprecated: {flag(f.name)})"
        parser.add_argument(flag(rename.get(f.name, f.name)), *aliases, dest=f.name, **kw)


def _show(v) -> str:
    if isinstance(v, tuple):
        return " ".join(str(x) for x in v) or "none"
    return repr(v) if isinstance(v, str) else str(v)


def build(cls, ns: argparse.Namespace | dict, **extra):
    """``cls`` from parsed options (absent options keep the field default), validated."""
    given = vars(ns) if isinstance(ns, argparse.Namespace) else dict(ns)
    hints = _hints(cls)
    kw = {}
    for f in dataclasses.fields(cls):
        if f.name in extra:
            kw[f.name] = extra[f.name]
        elif f.name in given:
            kw[f.name] = _coerce(f.name, given[f.name], hints[f.name])
    return validated(cls(**kw))


def validated(cfg):
    check_choices(cfg)
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg


def check_choices(cfg) -> None:
    for f in dataclasses.fields(cfg):
        ch = f.metadata.get("choices")
        v = getattr(cfg, f.name)
        if ch and v not in ch:
            raise ConfigError(f"{f.name} must be one of {', '.join(map(str, ch))}, got {v!r}")


def _coerce(name: str, value, tp):
    base, seq = _base(tp)
    try:
        if seq:
            items = value if isinstance(value, (list, tuple)) else [value]
            return tuple(_scalar(base, v) for v in items if not (base is str and v == ""))
        if value is None:
            return None
        return _scalar(base, value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{name}: cannot use {value!r} as {getattr(base, '__name__', base)} ({e})") from e


def _scalar(base, v):
    if base is bool:
        if isinstance(v, str):
            if v.lower() in ("true", "1", "yes"):
                return True
            if v.lower() in ("false", "0", "no", ""):
                return False
            raise ValueError("expected true/false")
        return bool(v)
    if base is int and isinstance(v, float) and not v.is_integer():
        raise ValueError("not an integer")
    return base(v) if base in (int, float, str) else v


# ----------------------------------------------------------------------------- ROS parameters
def param_defaults(cls, exclude=()) -> list[tuple[str, object]]:
    """``(name, default)`` of every field as a ROS parameter declares it: tuples become lists, an
    empty list ``[base()]`` (ROS cannot type an empty list), ``None`` ``""``."""
    hints = _hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        d = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        base, seq = _base(hints[f.name])
        if seq:
            d = list(d) if d else [base()]
        elif d is None:
            d = ""
        out.append((f.name, d))
    return out


def param_help(cls) -> dict:
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


def from_params(cls, values: dict, validate: bool = True):
    """The node's config from its declared parameter values (coerced to the field types),
    validated unless ``validate`` is false (a template completed later)."""
    hints = _hints(cls)
    kw = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            v = values[f.name]
            base, seq = _base(hints[f.name])
            if v == "" and not seq and base is not str:
                v = None  # "" is how a ROS parameter says "none"
            kw[f.name] = _coerce(f.name, v, hints[f.name])
    return validated(cls(**kw)) if validate else cls(**kw)


# ----------------------------------------------------------------------------- resolved config
def to_dict(cfg) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}


def write_config(path: str | Path, verb: str, *configs) -> Path:
    """Write the resolved configuration of a run (every field of every config) as JSON."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    doc = {"verb": verb}
    for c in configs:
        doc[type(c).__name__] = to_dict(c)
    p.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    return p


# ----------------------------------------------------------------------------- checks
def require(cond: bool, msg: str) -> None:
    """``validate()`` helper: raise :class:`ConfigError` with ``msg`` unless ``cond``."""
    if not cond:
        raise ConfigError(msg)


class JsonConfig:
    """``to_json`` / ``save`` / ``load`` for a configuration dataclass written next to its outputs
    (the resolved configuration of a run); ``load`` refuses unknown fields."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    def save(self, path) -> Path:
        """Write the resolved configuration (JSON) to ``path``."""
        path = Path(path)
        path.write_text(self.to_json())
        return path

    @classmethod
    def load(cls, path):
        d = json.loads(Path(path).read_text())
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"{path}: unknown {cls.__name__} fields {sorted(unknown)}")
        return cls(**d)
