"""Team YAML read as untrusted data: one small UTF-8 document of plain mappings, lists and scalars.

PyYAML's safe loader constructs no objects, but it still accepts what a platform must not: any
encoding error surfaces as a bare UnicodeDecodeError, duplicate keys silently keep the last
value, anchors/aliases let a few hundred bytes expand into billions of nodes ("billion
laughs"), tags such as `!!binary` turn text into values no check reads, and an integer of more
digits than Python converts is a bare ValueError. `read_document` refuses all of these, and
every non-finite number, before a spec sees the data; the messages name the line or the field.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

import yaml

# Per file. The largest demo file is ~2 KiB; a feature set's SQL is the biggest thing in one.
MAX_FILE_BYTES = 256 * 1024

# libyaml's parser when PyYAML was built with it (its wheels are): ~10x faster than pure Python.
# Only the parser is C; the constructor (where duplicate keys are caught) is Python either way.
_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# The YAML core schema's tags: what `!!str` and friends name. Any other tag (`!!binary`,
# `!!timestamp`, `!!set`, `!custom`, `!`, or `!!str` under a `%TAG` that renames `!!`) is refused.
_CORE = "tag:yaml.org,2002:"
CORE_TAGS = frozenset(
    _CORE + kind for kind in ("str", "int", "float", "bool", "null", "map", "seq")
)


class PlatformConfigError(ValueError):
    """A team YAML file that cannot be used; the message names the file, field and reason."""

    def __init__(self, path: Path, field: str, reason: str):
        self.path, self.field, self.reason = path, field, reason
        super().__init__(f"{path}: {field}: {reason}")


class YamlError(ValueError):
    """A file that is not strict YAML; `field` says where (a line or a key path)."""

    def __init__(self, field: str, reason: str):
        self.field, self.reason = field, reason
        super().__init__(f"{field}: {reason}")


class _StrictLoader(_Base):  # type: ignore[misc, valid-type]
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise YamlError(
                    f"line {key_node.start_mark.line + 1}", "mapping keys must be plain strings"
                )
            line = key_node.start_mark.line + 1
            if key_node.value in seen:
                raise YamlError(
                    f"line {line}",
                    f"duplicate key {key_node.value!r} (first set on line {seen[key_node.value]})",
                )
            seen[key_node.value] = line
        return super().construct_mapping(node, deep=deep)


# Python's own limit for int(<text>): more digits is a ValueError naming neither file nor field.
_MAX_DIGITS = sys.get_int_max_str_digits() or 4300


class _TooLong:
    """An integer literal too long to convert, kept until its field is known (`_check_values`)."""

    def __init__(self, digits: int, line: int):
        self.digits, self.line = digits, line

    def reason(self) -> str:
        return (
            f"an integer of {self.digits} digits (line {self.line}) is too large: at most "
            f"{_MAX_DIGITS} digits"
        )


def _checked(kind: str):
    """The safe loader's constructor for a core scalar type, refusing what that type cannot
    hold with the line (`!!int abc`, `!!bool maybe`) rather than a bare ValueError or KeyError."""
    construct = yaml.SafeLoader.yaml_constructors[_CORE + kind]

    def construct_checked(loader: _StrictLoader, node: yaml.ScalarNode) -> Any:
        if kind == "int":
            digits = sum(c.isdigit() for c in node.value)
            if digits > _MAX_DIGITS:
                return _TooLong(digits, node.start_mark.line + 1)
        try:
            return construct(loader, node)
        except (ValueError, KeyError) as exc:
            raise YamlError(
                f"line {node.start_mark.line + 1}", f"{node.value[:40]!r} is not a valid {kind}"
            ) from exc

    return construct_checked


for _kind in ("int", "float", "bool", "null"):
    _StrictLoader.add_constructor(_CORE + _kind, _checked(_kind))


def _refuse_anchors_and_tags(text: str) -> None:
    """Anchors, aliases and tags other than the core schema's are refused before anything is
    composed (a `!!binary` value is bytes, which no later check reads as text).

    Every alias needs an anchor, every anchor starts with `&` and every tag with `!`, so a file
    with neither character has none; only files that do are scanned, event by event (linear in
    the capped file size).
    """
    if "&" not in text and "!" not in text:
        return
    try:
        for event in yaml.parse(text, Loader=_Base):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise YamlError(
                    f"line {event.start_mark.line + 1}",
                    "YAML anchors and aliases (&name, *name) are not allowed in team YAML; "
                    "write the value out",
                )
            tag = getattr(event, "tag", None)
            if tag is not None and tag not in CORE_TAGS:
                raise YamlError(
                    f"line {event.start_mark.line + 1}",
                    f"the YAML tag {tag.replace(_CORE, '!!', 1)!r} is not allowed in team YAML: "
                    "only the core schema's (!!str, !!int, !!float, !!bool, !!null, !!map, !!seq)",
                )
    except yaml.YAMLError as exc:
        raise YamlError("<yaml>", str(exc)) from exc


def _check_values(value: Any, where: str) -> None:
    """No non-finite numbers, oversized integers or templates anywhere in the document."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, _TooLong):
                raise YamlError(where or "<file>", f"a key is {key.reason()}")
            _check_values(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_values(item, f"{where}[{i}]")
    elif isinstance(value, _TooLong):
        raise YamlError(where or "<file>", value.reason())
    elif isinstance(value, float) and not math.isfinite(value):
        raise YamlError(where, f"{value!r} is not a finite number")
    elif isinstance(value, str) and ("{{" in value or "{%" in value or "{#" in value):
        raise YamlError(
            where,
            "templates ({{ ... }}, {% ... %}) are not allowed in team YAML: the platform "
            "never renders them (they could read the environment)",
        )


def read_document(path: Path) -> Any:
    """The one YAML document in `path`, strictly parsed; raises YamlError naming where."""
    with open(path, "rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)  # never more than the cap, whatever the file's size
        if len(data) > MAX_FILE_BYTES:
            size = os.fstat(f.fileno()).st_size
            raise YamlError(
                "<file>", f"{size} bytes is over the {MAX_FILE_BYTES // 1024} KiB limit per file"
            )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise YamlError(
            f"line {line}",
            f"not UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start} ({exc.reason})",
        ) from exc
    _refuse_anchors_and_tags(text)
    loader = _StrictLoader(text)
    try:
        document = loader.get_single_data()
    except yaml.YAMLError as exc:
        raise YamlError("<yaml>", str(exc)) from exc
    finally:
        loader.dispose()
    _check_values(document, "")
    return document
