"""`circuits fields [SECTION]`: every config field with its type, default and meaning.

The meanings are the comments beside the fields in circuits/config.py (one source: the dataclasses),
read with `tokenize`, so nothing here can drift from the code. A protocol name as SECTION lists its
`params` (the module's DEFAULTS, meanings from its PARAMS_DOC) and `criteria` (CRITERIA, with the
YAML's rationale line).
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import tokenize

from circuits import config
from circuits.errors import CircuitsError, did_you_mean

SECTIONS = {"task": config.TaskConfig, "model": config.ModelConfig, "optim": config.OptimConfig,
            "train": config.TrainConfig}
TOP = {"seeds": "the run seeds (one network per seed); --seeds N runs 0..N-1",
       "criteria": "the protocol's written verdict criteria (`circuits fields PROTOCOL`)",
       "params": "the protocol's own knobs (`circuits fields PROTOCOL`)",
       "sweep": "a grid of fields to sweep, e.g. {task.frac: [0.3, 0.5]} (circuits.sweep)"}


@functools.lru_cache(maxsize=None)
def comments(cls) -> dict[str, str]:
    """{field: its comment} from the class's source: the comment on a field's line, continued by
    comment-only lines below it; a comment line above a group of fields is not a field's meaning."""
    src = inspect.getsource(cls)
    out: dict[str, str] = {}
    last, line_of = None, {}
    tokens = list(tokenize.generate_tokens(io.StringIO(src).readline))
    for i, tok in enumerate(tokens):
        if tok.type == tokenize.NAME and tok.start[1] == 4 and i + 1 < len(tokens) and tokens[i + 1].string == ":":
            line_of[tok.start[0]] = tok.string
        if tok.type == tokenize.COMMENT:
            row = tok.start[0]
            if row in line_of:
                last = line_of[row]
                out[last] = tok.string.lstrip("# ").strip()
            elif last and tok.line.strip().startswith("#") and tok.start[1] > 8 and row - 1 in _rows(out, line_of, last):
                out[last] += " " + tok.string.lstrip("# ").strip()
                line_of[row] = last
            else:
                last = None
    return out


def _rows(out, line_of, name) -> set[int]:
    return {r for r, n in line_of.items() if n == name}


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) if isinstance(tp, type) else str(tp).replace("typing.", "")


def section_rows(name: str) -> list[dict]:
    """One row per field of a config section: {field, type, default, meaning}."""
    cls = SECTIONS[name]
    hints, notes = config.get_type_hints(cls), comments(cls)
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append({"field": f"{name}.{f.name}", "type": _type_name(hints[f.name]), "default": default,
                     "meaning": notes.get(f.name, "")})
    return rows


def protocol_rows(name: str) -> list[dict]:
    """A protocol's params and criteria with their defaults (and the criteria's rationale)."""
    from circuits import registry
    proto = registry.get(name)
    rows = []
    params_doc = getattr(proto.module, "PARAMS_DOC", None) or {}
    for section, attr in (("params", "DEFAULTS"), ("criteria", "CRITERIA")):
        for key, default in (getattr(proto.module, attr, None) or {}).items():
            meaning = proto.rationale.get(key, "") if section == "criteria" else params_doc.get(key, "")
            rows.append({"field": f"{section}.{key}", "type": type(default).__name__ if default is not None else "",
                         "default": default, "meaning": meaning})
    return rows


def rows(section: str | None = None) -> list[dict]:
    """Every field (section None), one section's, or a protocol's params and criteria."""
    if section is None:
        top = [{"field": k, "type": "", "default": config.Config.__dataclass_fields__[k].default_factory()
                if k != "sweep" else {}, "meaning": m} for k, m in TOP.items()]
        return [r for s in SECTIONS for r in section_rows(s)] + top
    if section in SECTIONS:
        return section_rows(section)
    from circuits import registry
    if section in registry.protocols():
        return protocol_rows(section)
    known = [*SECTIONS, *registry.protocols()]
    raise CircuitsError(f"unknown section {section!r} ({did_you_mean(section, known)}known: {', '.join(known)})")


def table(found: list[dict]) -> str:
    """The rows as aligned text: field, type, default, meaning."""
    w = max((len(r["field"]) for r in found), default=5)
    t = max((len(r["type"]) for r in found), default=4)
    lines = []
    for r in found:
        default = repr(r["default"]) if isinstance(r["default"], str) else str(r["default"])
        lines.append(f"{r['field']:<{w}}  {r['type']:<{t}}  {default:<12}  {r['meaning']}".rstrip())
    return "\n".join(lines)
