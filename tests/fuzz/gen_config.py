"""YAML configuration inputs: documents built from each kind's JSON Schema, valid
documents with one thing broken, and text-level damage (YAML syntax, aliases, tags).

``config_texts()`` is what the loader target draws: one to three documents
(ModelService and Experiment, names drawn from a small set so references
resolve often), each either generated from the schema (with junk swapped in
at random nodes) or a known-good document with one mutation, dumped to YAML,
then possibly damaged as text.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

from controlplane.config import json_schema, known_kinds

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("chat", "v1", "v2", "canary", "sessions", "stable")
MAX_DEPTH = 8

# Values that break the usual assumptions: type confusion, extremes, encodings.
_EXTREMES: tuple[object, ...] = (
    None, True, False, 0, -1, 1, 100, 101, 2**31, 2**63, -(2**63), 10**30, 0.5, -0.0, 1e308,
    float("inf"), float("-inf"), float("nan"), "", " ", "0", "-1s", "0s", "1e3s", "999999999h",
    "5s", "10ms", "2m", "nan", "inf", "~", "null", "yes", "no", "0x10", "0o17", "1_000",
    "127.0.0.1", "::1", "10.0.0.300", "http://x", "/", "\x00", "\u202e", "ü" * 3, "a" * 300,
    [], {}, [None], {"": None},
)


def junk(depth: int = 2) -> st.SearchStrategy[Any]:
    """Arbitrary YAML-representable values, extremes included."""
    scalars = st.one_of(
        st.sampled_from(_EXTREMES),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=60),
        st.text(st.characters(codec="utf-8"), min_size=41, max_size=2000),
        st.booleans(),
    )
    if depth <= 0:
        return scalars
    return st.one_of(
        scalars,
        st.lists(st.deferred(lambda: junk(depth - 1)), max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=20), st.sampled_from(_keys())),
                        st.deferred(lambda: junk(depth - 1)), max_size=4),
    )


@functools.cache
def _keys() -> tuple[str, ...]:
    """Every property name any schema uses (plausible unknown or misplaced keys)."""
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            props = node.get("properties")
            if isinstance(props, dict):
                found.update(props)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for kind in known_kinds():
        walk(json_schema(kind))
    return tuple(sorted(found))


def _string(schema: dict[str, Any], name: str) -> st.SearchStrategy[Any]:
    if name in ("name", "service", "baseline", "candidate", "version", "primary"):
        return st.sampled_from(NAMES)
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        return st.from_regex(pattern, fullmatch=True)
    return st.text(max_size=30)


def from_schema(schema: Any, name: str = "", depth: int = 0) -> st.SearchStrategy[Any]:
    """Values shaped by ``schema``; ``junk`` replaces about one node in twelve."""
    valid = _valid(schema, name, depth)
    return st.integers(0, 11).flatmap(lambda i: junk(1) if i == 0 else valid)


def _valid(schema: Any, name: str, depth: int) -> st.SearchStrategy[Any]:
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return junk(1)
    if "const" in schema:
        return st.just(schema["const"])
    if isinstance(schema.get("enum"), list):
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind is None:
        alternatives = [a for key in ("oneOf", "anyOf") for a in schema.get(key, [])
                        if isinstance(a, dict) and ("type" in a or "enum" in a or "const" in a)]
        if alternatives:
            return st.one_of(*(_valid(a, name, depth + 1) for a in alternatives))
        return junk(1)
    if isinstance(kind, list):
        return st.one_of(*(_valid({**schema, "type": k}, name, depth) for k in kind))
    if kind == "object":
        return _object(schema, depth)
    if kind == "array":
        low = int(schema.get("minItems", 0))
        return st.lists(from_schema(schema.get("items", {}), name, depth + 1),
                        min_size=low, max_size=low + 3)
    if kind == "string":
        return _string(schema, name)
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False)
    if kind == "boolean":
        return st.booleans()
    return junk(1)


def _object(schema: dict[str, Any], depth: int) -> st.SearchStrategy[Any]:
    props: dict[str, Any] = schema.get("properties") or {}
    required = [k for k in schema.get("required", []) if k in props]
    fixed = {k: from_schema(props[k], k, depth + 1) for k in required}
    optional = {k: from_schema(v, k, depth + 1) for k, v in props.items() if k not in fixed}
    base = st.fixed_dictionaries(fixed, optional=optional)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        more = st.dictionaries(st.text(min_size=1, max_size=12),
                               from_schema(extra, "", depth + 1), max_size=3)
        return st.tuples(base, more).map(lambda t: {**t[1], **t[0]})
    return base


@functools.cache
def document(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    body = _valid(json_schema(kind), "", 0)
    return body.map(lambda d: d if isinstance(d, dict) else {"spec": d})


# -- known-good documents, each with one mutation ------------------------------------


@functools.cache
def seeds() -> tuple[dict[str, Any], ...]:
    docs: list[dict[str, Any]] = []
    for path in sorted((ROOT / "examples").glob("*/*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    return tuple(docs)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _replace(node: Any, path: tuple[Any, ...], how: str, new: Any) -> Any:
    """A copy of ``node`` with the value at ``path`` replaced, deleted or grown."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(node, dict):
        copy = dict(node)
        if not rest and how == "delete":
            copy.pop(head, None)
        elif not rest and how == "extra":
            copy[f"{head}x" if isinstance(head, str) else head] = new
        else:
            copy[head] = _replace(node[head], rest, how, new)
        return copy
    copy_list = list(node)
    if not rest and how == "delete":
        del copy_list[head]
    elif not rest and how == "extra":
        copy_list.insert(head, new)
    else:
        copy_list[head] = _replace(node[head], rest, how, new)
    return copy_list


@st.composite
def mutated_seed(draw: st.DrawFn) -> dict[str, Any]:
    doc = draw(st.sampled_from(seeds()))
    for _ in range(draw(st.integers(0, 2))):
        path = draw(st.sampled_from(_paths(doc)))
        how = draw(st.sampled_from(["replace", "delete", "extra"]))
        new = draw(st.one_of(junk(), st.sampled_from(_keys())))
        doc = _replace(doc, path, how, new) if path else doc
    return doc if isinstance(doc, dict) else {"spec": doc}


# -- text ---------------------------------------------------------------------------

SNIPPETS = (
    "&a ", "*a ", "*zz ", "!!binary aGk=", "!!python/object:os.system ", "!!str ", "!!int ",
    "<<: *a\n", "? ", "- ", "{", "}", "[", "]", ": ", "\t", "\n---\n", "\n...\n",
    "%YAML 1.1\n", "%TAG ! tag:x,2000:\n", "\x00", "\ufeff", "'", '"', "# c\n", "|\n", ">-\n",
    "\\", "\r", "\u2028", "\x85", "\U0001f600", "0x", "!!timestamp 2001-12-14 ",
    "!!float .inf ", "!!null ", "!!set {a}", "!!omap [a: 1]", "~",
)


def _dump(docs: list[Any]) -> str:
    try:
        return yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True)
    except (yaml.YAMLError, ValueError):
        return yaml.safe_dump_all([{"spec": repr(docs)}])


@st.composite
def damaged(draw: st.DrawFn, text: str) -> str:
    """``text`` with up to three edits: snippets inserted, ranges cut, lines repeated."""
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        edit = draw(st.sampled_from(["insert", "cut", "repeat"]))
        if edit == "insert":
            text = text[:at] + draw(st.sampled_from(SNIPPETS) | st.text(max_size=8)) + text[at:]
        elif edit == "cut":
            text = text[:at] + text[at + draw(st.integers(1, 40)):]
        else:
            line_start = text.rfind("\n", 0, at) + 1
            line_end = text.find("\n", at)
            line = text[line_start:line_end if line_end >= 0 else len(text)]
            text = text[:line_start] + line + "\n" + text[line_start:]
    return text


def _aliases(n: int) -> str:
    """Nested aliases: a small text that expands into a huge tree (the node cap)."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]"
              for i in range(1, n)]
    return ("apiVersion: sluice.dev/v1alpha1\nkind: ModelService\nmetadata: {name: chat}\n"
            "spec:\n" + "".join(f"  {line}\n" for line in lines))


def one_document() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(mutated_seed(), *(document(k) for k in known_kinds()))


@st.composite
def config_texts(draw: st.DrawFn) -> str | bytes:
    """Mostly text; one in eight as a file's bytes (encodings, BOMs, invalid UTF-8)."""
    if draw(st.integers(0, 40)) == 0:
        return _aliases(draw(st.integers(2, 9)))
    docs = draw(st.lists(one_document(), min_size=1, max_size=3))
    text = _dump(docs)
    if draw(st.booleans()):
        text = draw(damaged(text))
    if draw(st.integers(0, 7)) > 0:
        return text
    raw = text.encode("utf-8", "surrogatepass")
    at = draw(st.integers(0, len(raw)))
    insert = draw(st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff", b"\xc3", b"\x00",
                                   b"\xed\xa0\x80"]))
    prefix = draw(st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff\xfe"]))
    return prefix + raw[:at] + insert + raw[at:]
