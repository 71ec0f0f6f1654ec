"""The README's settings table, generated from ``models.settings.Settings`` so that the two cannot drift.

    python -m tools.settings_doc            # rewrite the table between the markers in README.md
    python -m tools.settings_doc --check    # exit 1 (and say so) when README.md differs from the model

One row per field: the environment variable, its type (with the model's bounds), its default (secrets are never
shown) and the field's ``description``. ``tests/unit/test_settings_doc.py`` fails when README.md is stale.
"""

from __future__ import annotations

import argparse
import enum
import sys
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import SecretStr
from pydantic.fields import FieldInfo

from models.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START = "<!-- settings table: generated from models/settings.py by `python -m tools.settings_doc`; do not edit -->"
END = "<!-- end of the settings table -->"

_BOUNDS = ((annotated_types.Ge, "ge", "≥"), (annotated_types.Gt, "gt", ">"),
           (annotated_types.Le, "le", "≤"), (annotated_types.Lt, "lt", "<"))


class UndocumentedSetting(ValueError):
    """A settings field without a description: the table would have an empty row."""


def render_table(settings: type[Settings] = Settings) -> str:
    lines = ["| variable | type | default | meaning |", "|---|---|---|---|"]
    for name, field in settings.model_fields.items():
        if not (field.description or "").strip():
            raise UndocumentedSetting(f"Settings.{name} has no description (Field(description=...))")
        cells = (f"`{name.upper()}`", _type(field), _default(field), field.description or "")
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def rewrite(text: str, table: str) -> str:
    """``text`` with everything between the markers replaced by ``table``."""
    before, start, rest = text.partition(START)
    _, end, after = rest.partition(END)
    if not start or not end:
        raise ValueError(f"README.md needs the markers {START!r} and {END!r}, in that order")
    return f"{before}{START}\n{table}\n{END}{after}"


def _type(field: FieldInfo) -> str:
    text = _type_name(field.annotation)
    bounds = [f"{sign} {_number(getattr(m, attr))}" for m in field.metadata
              for cls, attr, sign in _BOUNDS if isinstance(m, cls)]
    return f"{text}, {', '.join(bounds)}" if bounds else text


def _type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        named = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(named) + (", optional" if type(None) in args else "")
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin is list:
        return f"list of {_type_name(args[0])} (comma-separated or JSON)"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "one of " + ", ".join(f"`{m.value}`" for m in annotation)
    if annotation is SecretStr:
        return "secret"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if _is_secret(field.annotation) and field.default is not None:
        return "secret, not shown"
    value = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    if isinstance(value, float):
        value = _number(value)
    text = str(value)
    if text.startswith(str(ROOT)):  # a path inside the checkout: the same on every machine
        text = str(Path(text).relative_to(ROOT))
    return f"`{text}`" if text else "empty"


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or SecretStr in typing.get_args(annotation)


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.settings_doc", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when README.md differs; change nothing")
    args = parser.parse_args(argv)
    current = README.read_text()
    wanted = rewrite(current, render_table())
    if current == wanted:
        return 0
    if args.check:
        print("README.md's settings table differs from models/settings.py: run python -m tools.settings_doc",
              file=sys.stderr)
        return 1
    README.write_text(wanted)
    print("README.md: settings table rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
