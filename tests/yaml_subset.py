"""A reader for the block subset of YAML that deploy/ uses (mappings, sequences, one-line
flow lists/maps, quoted and plain scalars). PyYAML is not a dependency; the reader refuses
what it does not know, so a file outside the subset fails a test instead of passing unread.
tests/unit/test_deploy.py checks it reads every deploy/ file as PyYAML would, where installed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any


def _strip_comment(line: str) -> str:
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'" and (i == 0 or line[i - 1] in " [{,:-"):
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] == " "):
            return line[:i]
    return line


def _split_flow(body: str) -> list[str]:
    items, quote, start = [], None, 0
    for i, ch in enumerate(body):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[]{}":
            raise ValueError(f"nested flow collection not supported: {body!r}")
        elif ch == ",":
            items.append(body[start:i].strip())
            start = i + 1
    items.append(body[start:].strip())
    return [item for item in items if item]


_KEY = re.compile(r'^("[^"]*"|[A-Za-z0-9_.$/-]+):(?: +(.*))?$')


def _scalar(text: str) -> Any:
    if text.startswith("["):
        assert text.endswith("]"), text
        return [_scalar(item) for item in _split_flow(text[1:-1])]
    if text.startswith("{"):
        assert text.endswith("}"), text
        out = {}
        for item in _split_flow(text[1:-1]):
            m = _KEY.match(item)
            assert m, f"not a key: value pair: {item!r}"
            out[_scalar(m.group(1))] = _scalar(m.group(2) or "")
        return out
    if text.startswith('"'):
        assert text.endswith('"') and len(text) > 1 and "\\" not in text, f"unsupported double-quoted scalar: {text}"
        return text[1:-1]
    if text.startswith("'"):
        assert text.endswith("'") and len(text) > 1, text
        return text[1:-1].replace("''", "'")
    if text[:1] in "|>&*!%@`":
        raise ValueError(f"YAML feature not supported by this reader: {text!r}")
    if text in ("", "~", "null"):
        return None
    if text in ("true", "false"):
        return text == "true"
    if text.lower() in ("yes", "no", "on", "off", "y", "n"):
        raise ValueError(f"ambiguous YAML boolean {text!r}: quote it or write true/false")
    if re.fullmatch(r"[-+]?[0-9]+", text):
        return int(text)
    if re.fullmatch(r"[-+]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?", text):
        return float(text)
    return text


def _block(lines: list[tuple[int, str]], i: int, indent: int) -> tuple[Any, int]:
    if lines[i][1] == "-" or lines[i][1].startswith("- "):
        seq = []
        while i < len(lines) and lines[i][0] == indent and (lines[i][1] == "-" or lines[i][1].startswith("- ")):
            rest = lines[i][1][1:].lstrip(" ")
            if not rest:
                value, i = _block(lines, i + 1, lines[i + 1][0])
            elif _KEY.match(rest):
                lines[i] = (indent + len(lines[i][1]) - len(rest), rest)
                value, i = _block(lines, i, lines[i][0])
            else:
                value, i = _scalar(rest), i + 1
            seq.append(value)
        return seq, i
    mapping: dict[str, Any] = {}
    while i < len(lines) and lines[i][0] == indent:
        m = _KEY.match(lines[i][1])
        if m is None:
            raise ValueError(f"line {lines[i][1]!r}: not `key: value`")
        key = _scalar(m.group(1))
        if key in mapping:
            raise ValueError(f"duplicate key {key!r}")
        if m.group(2):
            mapping[key], i = _scalar(m.group(2)), i + 1
        elif i + 1 < len(lines) and lines[i + 1][0] > indent:
            mapping[key], i = _block(lines, i + 1, lines[i + 1][0])
        else:
            mapping[key], i = None, i + 1
    return mapping, i


def parse_yaml(text: str) -> Any:
    lines = []
    for raw in text.splitlines():
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise ValueError("tab in indentation")
        line = _strip_comment(raw).rstrip()
        if line.strip() and line.strip() != "---":
            lines.append((len(line) - len(line.lstrip(" ")), line.strip()))
    if not lines:
        return None
    value, i = _block(lines, 0, lines[0][0])
    if i != len(lines):
        raise ValueError(f"unexpected indentation at {lines[i][1]!r}")
    return value


def load_yaml(path: Path) -> Any:
    return parse_yaml(path.read_text(encoding="utf-8"))
