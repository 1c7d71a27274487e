"""Label and field selectors, parsed and matched like the Kubernetes API server does."""

from __future__ import annotations

import re
from dataclasses import dataclass

_KEY = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET_RE = re.compile(r"^\s*(%s)\s+(in|notin)\s*\((.*)\)\s*$" % _KEY)
_OP_RE = re.compile(r"^\s*(%s)\s*(==|!=|=)\s*(%s)\s*$" % (_KEY, _VALUE))
_EXISTS_RE = re.compile(r"^\s*(!?)\s*(%s)\s*$" % _KEY)
_VALUE_RE = re.compile(r"^%s$" % _VALUE)


class SelectorError(ValueError):
    """A selector the API server would refuse with 400 BadRequest."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # '=', '!=', 'in', 'notin', 'exists', '!'
    values: tuple = ()

    def matches(self, labels: dict) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "=":
            return present and value == self.values[0]
        if self.op == "!=":
            return not present or value != self.values[0]
        if self.op == "in":
            return present and value in self.values
        if self.op == "notin":
            return not present or value not in self.values
        if self.op == "exists":
            return present
        return not present


def _split_terms(text: str) -> list:
    """Split on commas that are not inside parentheses."""
    terms, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError("unable to parse requirement: unbalanced ')' in %r" % text)
        if char == "," and depth == 0:
            terms.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth:
        raise SelectorError("unable to parse requirement: unbalanced '(' in %r" % text)
    terms.append("".join(current))
    return terms


def parse_label_selector(text: str | None) -> list:
    """Parse `a=b,c!=d,app in (x,y),!e,f` into requirements (empty selector = match all)."""
    if text is None or not text.strip():
        return []
    requirements = []
    for term in _split_terms(text):
        if not term.strip():
            raise SelectorError("unable to parse requirement: found '', expected: identifier in %r" % text)
        match = _SET_RE.match(term)
        if match:
            values = tuple(v.strip() for v in match.group(3).split(","))
            if not values or any(not v or not _VALUE_RE.match(v) for v in values):
                raise SelectorError("unable to parse requirement: invalid value list in %r" % term.strip())
            requirements.append(Requirement(match.group(1), match.group(2), values))
            continue
        match = _OP_RE.match(term)
        if match:
            op = "=" if match.group(2) in ("=", "==") else "!="
            requirements.append(Requirement(match.group(1), op, (match.group(3),)))
            continue
        match = _EXISTS_RE.match(term)
        if match:
            requirements.append(Requirement(match.group(2), "!" if match.group(1) else "exists"))
            continue
        raise SelectorError("unable to parse requirement: %r is not a valid label selector term" % term.strip())
    return requirements


def match_labels(requirements: list, labels: dict | None) -> bool:
    labels = labels or {}
    return all(req.matches(labels) for req in requirements)


def parse_field_selector(text: str | None) -> list:
    """Parse `metadata.name=x,status.phase!=Pending` into (path, op, value) triples."""
    if text is None or not text.strip():
        return []
    result = []
    for term in text.split(","):
        match = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|!=|=)\s*(.*?)\s*$", term)
        if not match:
            raise SelectorError("invalid field selector term %r" % term.strip())
        result.append((match.group(1), "!=" if match.group(2) == "!=" else "=", match.group(3)))
    return result


def _lookup(obj: dict, path: str):
    current = obj
    for part in path.split("."):
        if not isinstance(current, dict):
            return None
        current = current.get(part)
    return current


def match_fields(requirements: list, obj: dict) -> bool:
    for path, op, value in requirements:
        actual = _lookup(obj, path)
        actual = "" if actual is None else str(actual)
        if (actual == value) != (op == "="):
            return False
    return True
