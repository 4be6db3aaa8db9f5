"""Configuration errors: where (file, line, column, field path) and what."""

from __future__ import annotations

from dataclasses import dataclass

import yaml


@dataclass(frozen=True, order=True)
class Mark:
    """A 1-based position in a YAML file."""

    line: int
    column: int

    @classmethod
    def of(cls, node: yaml.Node) -> Mark:
        return cls(node.start_mark.line + 1, node.start_mark.column + 1)


FILE_START = Mark(1, 1)

# Longest value an error message quotes: a 4 MB value must not come back whole
# (unreadable logs, and a secret pasted in the wrong field would be echoed).
EXCERPT_CHARS = 40


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """A short, escaped quotation of ``value`` for an error message."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text):,} characters)"


@dataclass(frozen=True)
class ConfigError:
    file: str
    line: int
    column: int
    path: str  # e.g. "spec.versions[1].endpoints[0].port"; "" for a file or document
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        if self.path:
            return f"{where}: {self.path}: {self.message}"
        return f"{where}: {self.message}"


class Errors:
    """Collects every error of a load; nothing stops at the first."""

    def __init__(self) -> None:
        self.items: list[ConfigError] = []

    def add(self, file: str, mark: Mark, path: str, message: str) -> None:
        self.items.append(ConfigError(file, mark.line, mark.column, path, message))

    def __len__(self) -> int:
        return len(self.items)
