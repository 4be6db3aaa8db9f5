"""Helpers: a minimal valid ModelService whose spec body each test replaces."""

from __future__ import annotations

import textwrap

from controlplane.config import LoadResult, load_text

HEADER = """\
apiVersion: sluice.dev/v1alpha1
kind: ModelService
metadata:
  name: chat
spec:
"""
# Spec body lines are indented by two: body line n is file line 5 + n, column + 2.
BODY = """
listener: {address: 127.0.0.1, port: 10000}
versions:
  - name: v1
    weight: 100
    endpoints:
      - {address: 10.0.0.1, port: 8000}
"""


def doc(body: str = BODY, header: str = HEADER) -> str:
    return header + textwrap.indent(textwrap.dedent(body).strip("\n") + "\n", "  ")


def errors_of(result: LoadResult) -> list[tuple[int, int, str, str]]:
    assert result.state is None or not result.errors
    return [(e.line, e.column, e.path, e.message) for e in result.errors]


def errors(text: str) -> list[tuple[int, int, str, str]]:
    return errors_of(load_text(text, "t.yaml"))
