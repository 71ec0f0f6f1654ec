"""The JSON Schema subset that OpenAI's strict structured outputs accept, as a pure checker.

Used twice, on purpose: the worker checks its own answer schema at start and refuses to run with one the real
endpoint would reject, and the simulator answers such a schema with the same 400 the real endpoint sends.

Every rule cites OpenAI's guide "Structured model outputs", section "Supported schemas"
(platform.openai.com/docs/guides/structured-outputs#supported-schemas), read 2026-11; the sub-headings are
quoted as ``[SO: <heading>]``. Where the real endpoint's wording is known (it is quoted in many public bug
reports), the messages use it, e.g. ``In context=('properties', 'name'), 'minLength' is not permitted.``
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# [SO: Supported types] string, number, boolean, integer, object, array, enum, anyOf; "null" inside a type
# list is how an optional field is spelled.
SUPPORTED_TYPES = frozenset({"string", "number", "boolean", "integer", "object", "array", "null"})

# [SO: Supported properties] the keywords allowed per type; everything else (minLength, maxLength, allOf,
# not, if/then/else, patternProperties, minProperties, uniqueItems, default, ...) is "not permitted".
COMMON_KEYWORDS = frozenset({"type", "description", "title", "enum", "const", "anyOf", "$ref", "$defs",
                             "definitions"})
KEYWORDS_BY_TYPE: dict[str, frozenset[str]] = {
    "string": frozenset({"pattern", "format"}),
    "number": frozenset({"multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum"}),
    "integer": frozenset({"multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum"}),
    "array": frozenset({"items", "minItems", "maxItems"}),
    "object": frozenset({"properties", "required", "additionalProperties"}),
    "boolean": frozenset(),
    "null": frozenset(),
}
# [SO: Supported properties] "Supported formats" for strings.
SUPPORTED_FORMATS = frozenset({"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6",
                               "uuid"})

# [SO: Objects have limitations on nesting depth and size] up to 5000 object properties in total, up to 10
# levels of nesting.
MAX_OBJECT_PROPERTIES = 5000
MAX_NESTING_DEPTH = 10
# [SO: Limitations on total string size] property names, definition names, enum values and const values
# together at most 120,000 characters.
MAX_TOTAL_STRING_CHARS = 120_000
# [SO: Limitations on enum size] at most 1000 enum values across all enum properties; one string enum of more
# than 250 values at most 15,000 characters in all.
MAX_ENUM_VALUES = 1000
LARGE_ENUM_VALUES = 250
MAX_LARGE_ENUM_CHARS = 15_000

# The API reference, response_format.json_schema.name: "a-z, A-Z, 0-9, or contain underscores and dashes, with
# a maximum length of 64".
SCHEMA_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Violation:
    context: tuple[str, ...]  # the path inside the schema, as the endpoint prints it
    message: str

    def describe(self, schema_name: str) -> str:
        """The real endpoint's 400 message for this violation."""
        return f"Invalid schema for response_format '{schema_name}': In context={self.context!r}, {self.message}"


def violations(schema: Any) -> list[Violation]:
    """Every way ``schema`` falls outside the strict subset; empty when the real endpoint would accept it."""
    found: list[Violation] = []
    if not isinstance(schema, dict):
        return [Violation((), "schema must be a JSON object.")]
    # [SO: Root objects must not be anyOf and must be an object]
    if schema.get("type") != "object" or "anyOf" in schema:
        got = schema.get("type", "anyOf" if "anyOf" in schema else None)
        found.append(Violation((), f"schema must be a JSON Schema of 'type: \"object\"', got 'type: \"{got}\"'."))
    walker = _Walker(found)
    walker.walk(schema, (), depth=0)
    for name, definitions in (("$defs", schema.get("$defs")), ("definitions", schema.get("definitions"))):
        if isinstance(definitions, dict):
            for key, sub in definitions.items():
                walker.strings += len(key)
                walker.walk(sub, (name, key), depth=0)
    walker.check_totals()
    return found


class _Walker:
    def __init__(self, found: list[Violation]) -> None:
        self.found = found
        self.properties = 0
        self.enum_values = 0
        self.strings = 0
        self.deepest = 0

    def add(self, context: tuple[str, ...], message: str) -> None:
        self.found.append(Violation(context, message))

    def walk(self, node: Any, context: tuple[str, ...], depth: int) -> None:
        if not isinstance(node, dict):
            self.add(context, "schema must be a JSON object.")
            return
        if set(node) == {"$ref"}:  # [SO: Definitions are supported], [SO: Recursive schemas are supported]
            return
        types = self._types(node, context)
        allowed = COMMON_KEYWORDS.union(*(KEYWORDS_BY_TYPE.get(t, frozenset()) for t in types))
        for keyword in node:
            if keyword not in allowed:
                self.add(context, f"'{keyword}' is not permitted.")
        if "format" in node and node["format"] not in SUPPORTED_FORMATS:
            self.add(context, f"format '{node['format']}' is not supported.")
        self._enum(node, context)
        if "anyOf" in node:
            for i, option in enumerate(_as_list(node["anyOf"])):
                self.walk(option, (*context, "anyOf", str(i)), depth)
        if "object" in types:
            self._object(node, context, depth + 1)
        if "array" in types and "items" in node:
            self.walk(node["items"], (*context, "items"), depth)

    def _types(self, node: dict[str, Any], context: tuple[str, ...]) -> set[str]:
        declared = node.get("type")
        if declared is None:
            if not any(k in node for k in ("anyOf", "enum", "const")):
                self.add(context, "schema must have a 'type' key.")
            return set()
        types = set(_as_list(declared))
        for unknown in sorted(t for t in types if t not in SUPPORTED_TYPES):
            self.add(context, f"type '{unknown}' is not supported.")
        return types

    def _enum(self, node: dict[str, Any], context: tuple[str, ...]) -> None:
        if "const" in node and isinstance(node["const"], str):
            self.strings += len(node["const"])
        if "enum" not in node:
            return
        values = _as_list(node["enum"])
        self.enum_values += len(values)
        chars = sum(len(v) for v in values if isinstance(v, str))
        self.strings += chars
        if len(values) > LARGE_ENUM_VALUES and chars > MAX_LARGE_ENUM_CHARS:
            self.add(context, f"an enum of more than {LARGE_ENUM_VALUES} values may hold at most "
                              f"{MAX_LARGE_ENUM_CHARS} characters, got {chars}.")

    def _object(self, node: dict[str, Any], context: tuple[str, ...], depth: int) -> None:
        self.deepest = max(self.deepest, depth)
        # [SO: additionalProperties: false must always be set in objects]
        if node.get("additionalProperties") is not False:
            self.add(context, "'additionalProperties' is required to be supplied and to be false.")
        properties = node.get("properties", {})
        if not isinstance(properties, dict):
            self.add(context, "'properties' must be an object.")
            return
        # [SO: All fields must be required]
        required = node.get("required")
        missing = [name for name in properties if not isinstance(required, list) or name not in required]
        if missing:
            self.add(context, "'required' is required to be supplied and to be an array including every key in "
                              f"properties. Missing '{missing[0]}'.")
        if isinstance(required, list):
            for extra in (name for name in required if name not in properties):
                self.add(context, f"'required' names '{extra}', which is not in properties.")
        self.properties += len(properties)
        for name, sub in properties.items():
            self.strings += len(name)
            self.walk(sub, (*context, "properties", name), depth)

    def check_totals(self) -> None:
        if self.deepest > MAX_NESTING_DEPTH:
            self.add((), f"schema has {self.deepest} levels of nesting, at most {MAX_NESTING_DEPTH} are allowed.")
        if self.properties > MAX_OBJECT_PROPERTIES:
            self.add((), f"schema has {self.properties} object properties, at most {MAX_OBJECT_PROPERTIES} "
                         "are allowed.")
        if self.enum_values > MAX_ENUM_VALUES:
            self.add((), f"schema has {self.enum_values} enum values, at most {MAX_ENUM_VALUES} are allowed.")
        if self.strings > MAX_TOTAL_STRING_CHARS:
            self.add((), f"schema's names, enum and const values hold {self.strings} characters, at most "
                         f"{MAX_TOTAL_STRING_CHARS} are allowed.")


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def strict_subset(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``schema`` without the keywords strict mode refuses (length bounds, defaults, ...).

    What is dropped must still be checked after the answer, on our side (pydantic does it for the
    classification). Objects are not repaired: a missing ``additionalProperties`` or ``required`` stays an error.
    """
    return _strip(schema)


def _strip(node: Any) -> Any:
    if isinstance(node, list):
        return [_strip(item) for item in node]
    if not isinstance(node, dict):
        return node
    types = set(_as_list(node.get("type", [])))
    allowed = COMMON_KEYWORDS.union(*(KEYWORDS_BY_TYPE.get(t, frozenset()) for t in types))
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key not in allowed:
            continue
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            out[key] = {name: _strip(sub) for name, sub in value.items()}
        elif key in ("items", "anyOf"):
            out[key] = _strip(value)
        else:
            out[key] = value
    return out


def iter_contexts(found: list[Violation]) -> Iterator[str]:
    """``context: message`` lines, for logs and the worker's refusal to start."""
    for v in found:
        yield f"{'/'.join(v.context) or '(root)'}: {v.message}"
