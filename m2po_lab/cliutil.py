"""Generate argparse options from a frozen config dataclass (one option per field)."""

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


def add_dataclass_options(parser: argparse.ArgumentParser, cls, skip=()) -> None:
    """``--field-name`` for every field of ``cls``; defaults are None (= the preset's value)."""
    docs = _field_docs(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        hint = hints[f.name]
        flag = "--" + f.name.replace("_", "-")
        help_ = docs.get(f.name, "") + f" (default: {f.default!r})"
        origin = typing.get_origin(hint)
        if origin is tuple:
            (inner, *_) = typing.get_args(hint)
            parser.add_argument(flag, dest=f.name, nargs="+", type=inner, default=None, help=help_)
        elif hint is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_)
        else:
            base = next((t for t in typing.get_args(hint) if t is not type(None)), hint)
            parser.add_argument(flag, dest=f.name, type=base, default=None, help=help_)


def dataclass_overrides(args: argparse.Namespace, cls) -> dict:
    """The options the user set, as field -> value (tuples for sequences)."""
    out = {}
    for f in dataclasses.fields(cls):
        v = getattr(args, f.name, None)
        if v is not None:
            out[f.name] = tuple(v) if isinstance(v, list) else v
    return out
