"""What the config dataclasses say about each key, read from their source for ``docs/config.md``
(:mod:`mplus.config_doc`): the annotation as written and the comment above or beside the field."""

from __future__ import annotations

import ast
import dataclasses
import functools
import io
import sys
import tokenize
import types
import typing
from pathlib import Path

# ---------------------------------------------------------------- what the dataclasses say


@dataclasses.dataclass(frozen=True)
class FieldDoc:
    type: str  # the annotation as written
    meaning: str  # the comment above and beside the field, one line


@functools.cache
def _module_fields(module_name: str) -> dict[str, dict[str, FieldDoc]]:
    """``{class name: {field: FieldDoc}}`` of every class in a module, from its source."""
    source = Path(sys.modules[module_name].__file__).read_text()
    lines = source.splitlines()
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            if not text.startswith("noqa"):
                comments[tok.start[0]] = text
    out: dict[str, dict[str, FieldDoc]] = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        fields = out.setdefault(node.name, {})
        for stmt in node.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            above, line = [], stmt.lineno - 1
            while line >= 1 and lines[line - 1].strip().startswith("#"):
                above.insert(0, comments.get(line, ""))
                line -= 1
            beside = [comments[n] for n in range(stmt.lineno, stmt.end_lineno + 1) if n in comments]
            meaning = " ".join(x for x in [*above, *beside] if x)
            fields[stmt.target.id] = FieldDoc(ast.unparse(stmt.annotation), meaning)
    return out


def field_doc(cls: type, name: str) -> FieldDoc:
    """Type and meaning of ``cls.name``; a subclass that only changes a default (no comment)
    keeps its base class's meaning.

    Raises:
        ValueError: the field has no comment anywhere in the class hierarchy.
    """
    found: FieldDoc | None = None
    for klass in cls.__mro__:
        if not dataclasses.is_dataclass(klass):
            continue
        doc = _module_fields(klass.__module__).get(klass.__name__, {}).get(name)
        if doc is None:
            continue
        found = found or doc
        if doc.meaning:
            return FieldDoc(found.type, doc.meaning)
    raise ValueError(f"{cls.__module__}.{cls.__name__}.{name}: no comment says what it means")


def _dataclass_of(hint) -> type | None:
    """The dataclass a field holds (``TinyArch | None`` -> ``TinyArch``), or None."""
    if dataclasses.is_dataclass(hint):
        return hint
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(inner) == 1 and dataclasses.is_dataclass(inner[0]):
            return inner[0]
    return None


def rows(cls: type, values: dict, prefix: str, skip: tuple[str, ...] = ()) -> list[tuple]:
    """``(key, type, value, meaning)`` of every leaf of ``values`` (a composed node of ``cls``),
    nested dataclasses expanded into dotted keys."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        value, sub = values[f.name], _dataclass_of(hints[f.name])
        if sub is not None and isinstance(value, dict):
            out += rows(sub, value, f"{prefix}{f.name}.")
        else:
            doc = field_doc(cls, f.name)
            out.append((prefix + f.name, doc.type, value, doc.meaning))
    return out
