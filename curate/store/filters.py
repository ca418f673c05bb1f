"""Payload conditions: parse `--where "width >= 256"` into a small backend-neutral form.

Both store backends translate `Condition` lists into their own filter types, so analyses never
touch Qdrant filter classes directly.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

OPS = ("==", "!=", ">=", "<=", ">", "<", "in", "not in", "exists", "missing")


@dataclass(frozen=True)
class Condition:
    """One payload condition. Several conditions in a list are combined with AND."""

    key: str
    op: str
    value: Any = None

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"unknown operator {self.op!r}; use one of {', '.join(OPS)}")

    def matches(self, payload: dict) -> bool:
        """Reference semantics, used by tests and by in-memory filtering."""
        present = self.key in payload and payload[self.key] is not None
        if self.op == "exists":
            return present
        if self.op == "missing":
            return not present
        if not present:
            return self.op in ("!=", "not in")
        v = payload[self.key]
        if self.op == "==":
            return v == self.value
        if self.op == "!=":
            return v != self.value
        if self.op == "in":
            return v in self.value
        if self.op == "not in":
            return v not in self.value
        try:
            return {">=": v >= self.value, "<=": v <= self.value, ">": v > self.value, "<": v < self.value}[
                self.op
            ]
        except TypeError:
            return False


_COND = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(==|!=|>=|<=|>|<|=|not in|in)\s*(.+?)\s*$")
_UNARY = re.compile(r"^\s*([A-Za-z_][\w.]*)\s+(exists|missing)\s*$")


def _value(text: str) -> Any:
    text = text.strip()
    if text.startswith("[") or text.startswith('"'):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"--where value {text!r} is not valid JSON ({e.msg}); "
                             "write lists as [1, 2] or [\"a\", \"b\"]") from None
    if text in ("true", "false"):
        return text == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip("'")


def parse_where(expressions: list[str] | str | None) -> list[Condition]:
    """Parse one or more expressions; each may join conditions with ` and `.

    Examples: `width >= 256`, `source == camA`, `label in [1, 2]`, `weather exists`.
    """
    if not expressions:
        return []
    if isinstance(expressions, str):
        expressions = [expressions]
    out: list[Condition] = []
    for expr in expressions:
        for part in re.split(r"\s+and\s+", expr.strip()):
            m = _UNARY.match(part)
            if m:
                out.append(Condition(m.group(1), m.group(2)))
                continue
            m = _COND.match(part)
            if not m:
                raise ValueError(
                    f"cannot read --where {part!r}; write e.g. 'width >= 256', 'source == camA', "
                    "'label in [1, 2]' or 'weather exists'"
                )
            key, op, raw = m.groups()
            op = "==" if op == "=" else op
            value = _value(raw)
            if op in ("in", "not in"):
                _check_list(part, op, value)
            out.append(Condition(key, op, value))
    return out


def _check_list(part: str, op: str, value: Any) -> None:
    """Stores match `in` lists of strings or of integers only; say so instead of failing deep inside."""
    if not isinstance(value, list):
        raise ValueError(f"--where {part!r}: '{op}' needs a list such as [1, 2]")
    if any(v is None for v in value):
        raise ValueError(f"--where {part!r}: a list cannot hold null; to match a missing value write "
                         f"'{part.split()[0]} missing'")
    strings = all(isinstance(v, str) for v in value)
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if not (strings or ints):
        raise ValueError(f"--where {part!r}: '{op}' takes a list of strings or of integers only "
                         "(for decimals or true/false use >=, <= or ==)")
