"""Generate argparse options from a frozen config dataclass (one option per field).

A field whose type is itself a config dataclass (``loss: LossConfig``) is flattened: each
of its fields gets its own flag (``--tau``, ``--eps-low``), and :func:`dataclass_overrides`
returns those as a nested dict (``{"loss": {"tau": 0.1}}``) that ``replace_config`` merges.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing


def _field_docs(cls) -> dict[str, str]:
    """Field docstrings (the string literal under each field) read from the class source."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    docs, body = {}, tree.body[0].body
    for a, b in zip(body, body[1:]):
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
            docs[a.target.id] = " ".join(str(b.value.value).split())
    return docs


def _nested(hint) -> type | None:
    """The config dataclass of a field typed as one, else None."""
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def _add_field(group, name: str, dest: str, hint, default, doc: str) -> None:
    flag = "--" + name.replace("_", "-")
    help_ = doc + f" (default: {default!r})"
    if typing.get_origin(hint) is tuple:
        (inner, *_) = typing.get_args(hint)
        group.add_argument(flag, dest=dest, nargs="+", type=inner, default=None, help=help_)
    elif hint is bool:
        group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=help_)
    else:
        base = next((t for t in typing.get_args(hint) if t is not type(None)), hint)
        group.add_argument(flag, dest=dest, type=base, default=None, help=help_)


def add_dataclass_options(parser: argparse.ArgumentParser, cls, skip=(), groups: dict | None = None) -> None:
    """``--field-name`` for every field of ``cls`` (nested config dataclasses flattened, in their own group).

    ``groups``: {help-section title: field names}; those fields are listed under their title
    in ``--help``, the others under the parser's own options.
    """
    docs, hints = _field_docs(cls), typing.get_type_hints(cls)
    flat = {f.name for f in dataclasses.fields(cls)}
    section = {}
    for title, names in (groups or {}).items():
        unknown = sorted(set(names) - flat)
        if unknown:
            raise ValueError(f"groups: {unknown} are not fields of {cls.__name__}")
        group = parser.add_argument_group(title)
        section.update({name: group for name in names})
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        sub = _nested(hints[f.name])
        if sub is None:
            _add_field(section.get(f.name, parser), f.name, f.name, hints[f.name], f.default, docs.get(f.name, ""))
            continue
        group = parser.add_argument_group(f"{f.name} options ({sub.__name__}: {docs.get(f.name, '')})")
        sub_docs, sub_hints, sub_default = _field_docs(sub), typing.get_type_hints(sub), f.default_factory() \
            if f.default is dataclasses.MISSING else f.default
        for g in dataclasses.fields(sub):
            if g.name in flat:
                raise ValueError(f"{cls.__name__}.{f.name}.{g.name} would share the flag of {cls.__name__}.{g.name}")
            _add_field(group, g.name, f"{f.name}.{g.name}", sub_hints[g.name], getattr(sub_default, g.name),
                       sub_docs.get(g.name, ""))


def dataclass_overrides(args: argparse.Namespace, cls) -> dict:
    """The options the user set, as field -> value (tuples for sequences; a dict for a nested config)."""
    hints = typing.get_type_hints(cls)
    out: dict = {}
    for f in dataclasses.fields(cls):
        sub = _nested(hints[f.name])
        names = [(g.name, f"{f.name}.{g.name}") for g in dataclasses.fields(sub)] if sub else [(f.name, f.name)]
        for name, dest in names:
            v = getattr(args, dest, None)
            if v is None:
                continue
            v = tuple(v) if isinstance(v, list) else v
            if sub:
                out.setdefault(f.name, {})[name] = v
            else:
                out[name] = v
    return out


def replace_config(cfg, **overrides):
    """``dataclasses.replace`` where a nested config may be given as a partial dict of its fields.

    None values are ignored (an option the user did not set). Validation errors of the
    nested config name its field, e.g. ``eps_low must be in (0, 1)``.
    """
    kw = {}
    for name, v in overrides.items():
        if v is None:
            continue
        current = getattr(cfg, name, None)
        if isinstance(v, dict) and dataclasses.is_dataclass(current):
            v = dataclasses.replace(current, **{k: x for k, x in v.items() if x is not None})
        kw[name] = v
    return dataclasses.replace(cfg, **kw)


def config_from_dict(cls, d: dict):
    """Rebuild a config dataclass from ``asdict`` output (lists -> tuples, nested dicts -> configs)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {sorted(unknown)}; accepted: {sorted(names)}")
    hints = typing.get_type_hints(cls)
    kw = {}
    for k, v in d.items():
        sub = _nested(hints[k])
        if sub is not None and isinstance(v, dict):
            v = config_from_dict(sub, v)
        elif isinstance(v, list):
            v = tuple(v)
        kw[k] = v
    return cls(**kw)


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars only on a terminal and without ``--no-progress`` (every CLI command decides the same way)."""
    import sys

    return not getattr(args, "no_progress", False) and sys.stderr.isatty()
