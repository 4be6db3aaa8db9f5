"""A small declarative field language: one description per document shape.

Each shape (``Obj``, ``Str``, ``Int`` ...) is used twice: ``Checker`` walks a
YAML node tree against it and reports every structural error with its
position, and ``to_json_schema`` exports the same shape as JSON Schema. Rules
that span fields (weights that add up to 100, duplicate names) are not shapes;
each kind checks those itself on the ``Value`` tree the checker returns.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar, Union

import yaml
from yaml.constructor import ConstructorError, SafeConstructor

from controlplane.config.durations import DurationError, parse_duration, parse_time
from controlplane.config.errors import Errors, Mark, excerpt

# A check beyond the pattern: returns a message when the text is not acceptable.
TextCheck = Callable[[str], "str | None"]


@dataclass(frozen=True)
class Str:
    pattern: str | None = None
    hint: str | None = None  # what the pattern means, in words
    enum: tuple[str, ...] | None = None
    max_length: int | None = None
    check: TextCheck | None = None  # replaces the pattern in the checker; must be stricter


@dataclass(frozen=True)
class Int:
    minimum: int | None = None
    maximum: int | None = None


@dataclass(frozen=True)
class Float:
    minimum: float | None = None
    exclusive_minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class Bool:
    const: bool | None = None
    hint: str | None = None


@dataclass(frozen=True)
class Duration:
    """A string such as ``500ms``, ``5s``, ``2m``, ``1h``; becomes int milliseconds."""

    positive: bool = True


@dataclass(frozen=True)
class Time:
    """A duration that may be fractional (``150us``, ``20ms``, ``0.5s``, ``2m``); float seconds.

    For measured quantities (latency thresholds and margins), where a bare number
    would leave the unit to guesswork.
    """

    positive: bool = False


@dataclass(frozen=True)
class List:
    items: Spec
    min_items: int = 0


@dataclass(frozen=True)
class Map:
    """A mapping of free string keys to string values (labels, annotations) or numbers."""

    keys: Str
    values: Str | Float


@dataclass(frozen=True)
class Field:
    name: str
    spec: Spec
    description: str
    required: bool = False
    default: object = None  # as written in YAML; documentation and schema only


@dataclass(frozen=True)
class Obj:
    fields: tuple[Field, ...]
    description: str = ""
    one_of: tuple[str, ...] = ()  # exactly one of these fields must be set
    # Cross-field constraints in JSON Schema form (the checker leaves them to the kind).
    schema_extra: dict[str, object] = field(default_factory=dict)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)


@dataclass(frozen=True)
class Either:
    """One of several shapes, chosen by the YAML node's type (a number or a mapping, say).

    At most one alternative per node type: a mapping, a list, and scalars that
    differ in YAML type (a string and a number).
    """

    alternatives: tuple[Spec, ...]
    hint: str  # "a number or a mapping with weight and soak"


Spec = Union[Str, Int, Float, Bool, Duration, Time, List, Map, Obj, Either]  # noqa: UP007


class Value:
    """A YAML node checked against a shape, with its position and field path.

    ``ok`` says the node itself has the right type and range (its children may
    still have errors). ``get`` hands out only ``ok`` children, so cross-field
    checks never work on a value that was already reported; ``has`` says
    whether a field was written at all.
    """

    __slots__ = ("data", "key", "node", "ok", "path")

    def __init__(
        self, node: yaml.Node, path: str, key: yaml.Node | None, data: object, ok: bool
    ) -> None:
        self.node = node
        self.path = path
        self.key = key
        self.data = data
        self.ok = ok

    @property
    def mark(self) -> Mark:
        return Mark.of(self.node)

    @property
    def key_mark(self) -> Mark:
        """The key that holds this value, or the value itself (list items, documents)."""
        return Mark.of(self.key) if self.key is not None else self.mark

    def text(self) -> str:
        assert isinstance(self.data, str), self.path
        return self.data

    def integer(self) -> int:
        assert isinstance(self.data, int) and not isinstance(self.data, bool), self.path
        return self.data

    def number(self) -> float:
        assert isinstance(self.data, int | float) and not isinstance(self.data, bool)
        return float(self.data)

    def flag(self) -> bool:
        assert isinstance(self.data, bool), self.path
        return self.data

    def fields(self) -> dict[str, Value]:
        assert isinstance(self.data, dict), self.path
        return self.data

    def items(self) -> list[Value]:
        assert isinstance(self.data, list), self.path
        return self.data

    def has(self, name: str) -> bool:
        return isinstance(self.data, dict) and name in self.data

    def get(self, name: str) -> Value | None:
        if not isinstance(self.data, dict):
            return None
        child = self.data.get(name)
        return child if child is not None and child.ok else None


# Longest key that prints as is in a field path: a label key (DNS prefix and name).
# Longer keys, and keys with line breaks or other unprintable characters, are quoted,
# escaped and cut, so an error stays one short line whatever the key.
_PLAIN_KEY_CHARS = 317


def join(path: str, name: str) -> str:
    if not (0 < len(name) <= _PLAIN_KEY_CHARS and name.isprintable()):
        name = excerpt(name)
    return f"{path}.{name}" if path else name


_TYPE_NAMES = {
    "tag:yaml.org,2002:str": "a string",
    "tag:yaml.org,2002:int": "an integer",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:null": "null",
    "tag:yaml.org,2002:timestamp": "a timestamp",
    "tag:yaml.org,2002:binary": "binary data",
}


def describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    name = _TYPE_NAMES.get(node.tag, f"a value tagged {node.tag}")
    if node.tag in ("tag:yaml.org,2002:null", "tag:yaml.org,2002:binary"):
        return name
    return f"{name} ({excerpt(node.value)})"


class TooLarge(Exception):
    pass


class Checker:
    """Checks one document; every error goes to ``errors``, nothing stops early."""

    # Aliases share nodes, so a tiny file can expand into a huge tree; cap the walk.
    MAX_NODES = 100_000

    def __init__(self, file: str, errors: Errors) -> None:
        self.file = file
        self.errors = errors
        self._constructor = SafeConstructor()
        self._visited = 0

    def error(self, mark: Mark, path: str, message: str) -> None:
        self.errors.add(self.file, mark, path, message)

    def check(self, node: yaml.Node, spec: Spec, path: str, key: yaml.Node | None) -> Value:
        self._visited += 1
        if self._visited > self.MAX_NODES:
            raise TooLarge
        if isinstance(spec, Obj):
            return self._object(node, spec, path, key)
        if isinstance(spec, List):
            return self._list(node, spec, path, key)
        if isinstance(spec, Map):
            return self._map(node, spec, path, key)
        if isinstance(spec, Either):
            return self._either(node, spec, path, key)
        return self._scalar(node, spec, path, key)

    def _either(self, node: yaml.Node, spec: Either, path: str, key: yaml.Node | None) -> Value:
        data = self._construct(node)
        for alt in spec.alternatives:
            if _fits(alt, node, data):
                return self.check(node, alt, path, key)
        self._wrong_type(node, path, spec.hint)
        return Value(node, path, key, None, False)

    def _wrong_type(self, node: yaml.Node, path: str, expected: str, hint: str = "") -> None:
        self.error(Mark.of(node), path, f"expected {expected}, got {describe(node)}{hint}")

    def _object(self, node: yaml.Node, spec: Obj, path: str, key: yaml.Node | None) -> Value:
        if not isinstance(node, yaml.MappingNode):
            hint = ""
            if node.tag == "tag:yaml.org,2002:null" and not any(f.required for f in spec.fields):
                hint = " (write {} to use the defaults)"
            self._wrong_type(node, path, "a mapping", hint)
            return Value(node, path, key, None, False)
        known = {f.name: f for f in spec.fields}
        children: dict[str, Value] = {}
        first_seen: dict[str, yaml.Node] = {}
        for k, v in self._pairs(node, path):
            name = k.value
            if name in first_seen:
                line = first_seen[name].start_mark.line + 1
                self.error(Mark.of(k), join(path, name),
                           f"duplicate key {excerpt(name)} (first at line {line})")
                continue
            first_seen[name] = k
            f = known.get(name)
            if f is None:
                self.error(Mark.of(k), join(path, name), unknown_field(name, known))
                continue
            children[name] = self.check(v, f.spec, join(path, name), k)
        value = Value(node, path, key, children, True)
        for f in spec.fields:
            if f.required and f.name not in first_seen:
                self.error(value.key_mark, join(path, f.name), f"missing required field '{f.name}'")
        if spec.one_of:
            self._one_of(value, spec.one_of, first_seen)
        return value

    def _one_of(self, value: Value, names: tuple[str, ...], seen: dict[str, yaml.Node]) -> None:
        present = sorted((n for n in names if n in seen), key=lambda n: Mark.of(seen[n]))
        choices = ", ".join(names)
        if not present:
            self.error(value.key_mark, value.path, f"set exactly one of {choices}")
        for extra in present[1:]:
            self.error(
                Mark.of(seen[extra]),
                join(value.path, extra),
                f"set exactly one of {choices} ({present[0]} is already set)",
            )

    def _pairs(self, node: yaml.MappingNode, path: str) -> list[tuple[yaml.ScalarNode, yaml.Node]]:
        pairs: list[tuple[yaml.ScalarNode, yaml.Node]] = []
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.tag == "tag:yaml.org,2002:str":
                pairs.append((k, v))
            elif k.tag == "tag:yaml.org,2002:merge":
                self.error(Mark.of(k), path, "merge keys (<<) are not supported")
            else:
                self.error(Mark.of(k), path, f"keys must be strings, got {describe(k)}")
        return pairs

    def _list(self, node: yaml.Node, spec: List, path: str, key: yaml.Node | None) -> Value:
        if not isinstance(node, yaml.SequenceNode):
            self._wrong_type(node, path, "a list")
            return Value(node, path, key, None, False)
        items = [self.check(n, spec.items, f"{path}[{i}]", None) for i, n in enumerate(node.value)]
        if len(items) < spec.min_items:
            self.error(Mark.of(node), path, f"needs at least {spec.min_items} item(s)")
            return Value(node, path, key, items, False)
        return Value(node, path, key, items, True)

    def _map(self, node: yaml.Node, spec: Map, path: str, key: yaml.Node | None) -> Value:
        if not isinstance(node, yaml.MappingNode):
            kind = "strings" if isinstance(spec.values, Str) else "numbers"
            self._wrong_type(node, path, f"a mapping of strings to {kind}")
            return Value(node, path, key, None, False)
        children: dict[str, Value] = {}
        for k, v in self._pairs(node, path):
            sub = join(path, k.value)
            if k.value in children:
                self.error(Mark.of(k), sub, f"duplicate key {excerpt(k.value)}")
                continue
            name = self._scalar(k, spec.keys, sub, None)
            if name.ok:
                children[k.value] = self._scalar(v, spec.values, sub, k)
        return Value(node, path, key, children, True)

    def _scalar(
        self, node: yaml.Node, spec: Str | Int | Float | Bool | Duration | Time, path: str,
        key: yaml.Node | None,
    ) -> Value:
        data = self._construct(node)
        message = None
        if isinstance(spec, Str | Duration | Time) and not isinstance(data, str):
            expected = "a string"
            if isinstance(spec, Duration):
                expected = "a duration string like '5s'"
            elif isinstance(spec, Time):
                expected = "a duration with its unit, like '20ms' or '0.5s'"
            self._wrong_type(node, path, expected)
            return Value(node, path, key, None, False)
        if isinstance(spec, Time):
            assert isinstance(data, str)
            try:
                data = parse_time(data)
            except DurationError as e:
                message = str(e)
            else:
                if spec.positive and data == 0:
                    message = "must be greater than 0"
        elif isinstance(spec, Str):
            assert isinstance(data, str)
            message = check_text(data, spec)
        elif isinstance(spec, Duration):
            assert isinstance(data, str)
            try:
                data = parse_duration(data)
            except DurationError as e:
                message = str(e)
            else:
                if spec.positive and data == 0:
                    message = "must be greater than 0"
        elif isinstance(spec, Int):
            if not isinstance(data, int) or isinstance(data, bool):
                self._wrong_type(node, path, "an integer")
                return Value(node, path, key, None, False)
            message = check_range(data, spec.minimum, None, spec.maximum)
        elif isinstance(spec, Float):
            if not isinstance(data, int | float) or isinstance(data, bool):
                self._wrong_type(node, path, "a number")
                return Value(node, path, key, None, False)
            data = float(data)
            if not math.isfinite(data):
                message = f"must be a finite number (got {node.value})"
            else:
                message = check_range(data, spec.minimum, spec.exclusive_minimum, spec.maximum)
        else:
            if not isinstance(data, bool):
                self._wrong_type(node, path, "a boolean (true or false)")
                return Value(node, path, key, None, False)
            if spec.const is not None and data != spec.const:
                hint = f" ({spec.hint})" if spec.hint else ""
                message = f"must be {str(spec.const).lower()}{hint}"
        if message is not None:
            self.error(Mark.of(node), path, message)
            return Value(node, path, key, None, False)
        return Value(node, path, key, data, True)

    def _construct(self, node: yaml.Node) -> object:
        if not isinstance(node, yaml.ScalarNode):
            return node  # a collection: never the scalar a shape asks for
        try:
            return self._constructor.construct_object(node)
        except (ConstructorError, ValueError):
            return node


def _fits(spec: Spec, node: yaml.Node, data: object) -> bool:
    """Whether ``node`` has the YAML type ``spec`` takes (its value is checked later)."""
    if isinstance(spec, Obj | Map):
        return isinstance(node, yaml.MappingNode)
    if isinstance(spec, List):
        return isinstance(node, yaml.SequenceNode)
    if isinstance(spec, Either):
        return any(_fits(alt, node, data) for alt in spec.alternatives)
    if not isinstance(node, yaml.ScalarNode):
        return False
    if isinstance(spec, Str | Duration | Time):
        return isinstance(data, str)
    if isinstance(spec, Bool):
        return isinstance(data, bool)
    if isinstance(spec, Int):
        return isinstance(data, int) and not isinstance(data, bool)
    return isinstance(data, int | float) and not isinstance(data, bool)


def unknown_field(name: str, known: dict[str, Field]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown field {excerpt(name)}{hint}; known fields: {', '.join(known)}"


def check_text(text: str, spec: Str) -> str | None:
    if spec.enum is not None and text not in spec.enum:
        return f"must be one of {', '.join(spec.enum)} (got {excerpt(text)})"
    if spec.max_length is not None and len(text) > spec.max_length:
        return f"must be at most {spec.max_length} characters (got {len(text)})"
    if spec.check is not None:  # stricter than the pattern, and says what is wrong
        return spec.check(text)
    if spec.pattern is not None and not re.fullmatch(spec.pattern, text):
        return f"must be {spec.hint or 'match ' + spec.pattern} (got {excerpt(text)})"
    return None


def check_range(
    x: float, minimum: float | None, exclusive_minimum: float | None, maximum: float | None
) -> str | None:
    if minimum is not None and maximum is not None and not minimum <= x <= maximum:
        return f"must be between {minimum} and {maximum} (got {x})"
    if minimum is not None and x < minimum:
        return f"must be at least {minimum} (got {x})"
    if exclusive_minimum is not None and x <= exclusive_minimum:
        return f"must be greater than {exclusive_minimum} (got {x})"
    if maximum is not None and x > maximum:
        return f"must be at most {maximum} (got {x})"
    return None


T = TypeVar("T")


def opt(v: Value, name: str, read: Callable[[Value], T], default: T) -> T:
    """The field ``name`` of a checked mapping, read; ``default`` when it is absent."""
    child = v.get(name)
    return read(child) if child is not None else default
