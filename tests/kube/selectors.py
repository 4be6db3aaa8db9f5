"""Kubernetes label selectors, as the API server reads ``?labelSelector=``.

``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``, ``a in (x,y)``, ``a notin (x,y)``,
joined by commas (all must hold).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_SET = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _terms(selector: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        terms.append(current)
    return [t.strip() for t in terms if t.strip()]


def _holds(term: str, labels: Mapping[str, str]) -> bool:
    found = _SET.match(term)
    if found:
        key, op, values = found.groups()
        options = {v.strip() for v in values.split(",") if v.strip()}
        inside = key in labels and labels[key] in options
        return inside if op == "in" else not inside
    if "!=" in term:
        key, value = (s.strip() for s in term.split("!=", 1))
        return labels.get(key) != value
    if "=" in term:
        key, value = (s.strip() for s in term.replace("==", "=").split("=", 1))
        return labels.get(key) == value
    if term.startswith("!"):
        return term[1:].strip() not in labels
    return term in labels


def matches(selector: str, labels: Mapping[str, str]) -> bool:
    return all(_holds(term, labels) for term in _terms(selector))
