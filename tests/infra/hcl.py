"""Terraform files as plain Python data (python-hcl2), with the references into infra/cdn-policy.json resolved."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import hcl2

from tests.infra.conftest import REPO

TF_DIR = REPO / "infra" / "terraform"
POLICY_PATH = REPO / "infra" / "cdn-policy.json"

_OPTIONS = hcl2.SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True)


def _unquote(value: Any) -> Any:
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items() if k not in ("__is_block__", "__comments__")}
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def parse(path: Path) -> dict[str, Any]:
    return _unquote(hcl2.loads(path.read_text(), serialization_options=_OPTIONS))


def block(value: Any) -> dict[str, Any]:
    """A nested block (python-hcl2 gives each as a one-element list)."""
    if isinstance(value, list):
        assert len(value) == 1, value
        value = value[0]
    assert isinstance(value, dict), value
    return value


class Module:
    """Every .tf file of a folder merged: resources[type][name], data[type][name], variables, outputs, locals."""

    def __init__(self, folder: Path = TF_DIR) -> None:
        self.resources: dict[str, dict[str, dict[str, Any]]] = {}
        self.data: dict[str, dict[str, dict[str, Any]]] = {}
        self.variables: dict[str, dict[str, Any]] = {}
        self.outputs: dict[str, dict[str, Any]] = {}
        self.locals: dict[str, Any] = {}
        self.providers: list[tuple[str, dict[str, Any]]] = []
        self.terraform: list[dict[str, Any]] = []
        for path in sorted(folder.glob("*.tf")):
            doc = parse(path)
            for kind, target in (("resource", self.resources), ("data", self.data)):
                for entry in doc.get(kind, []):
                    for rtype, named in entry.items():
                        for name, body in named.items():
                            assert name not in target.setdefault(rtype, {}), f"{rtype}.{name} twice"
                            target[rtype][name] = body
            for entry in doc.get("variable", []):
                self.variables.update(entry)
            for entry in doc.get("output", []):
                self.outputs.update(entry)
            for entry in doc.get("locals", []):
                self.locals.update(entry)
            for entry in doc.get("provider", []):
                self.providers.extend(entry.items())
            self.terraform.extend(doc.get("terraform", []))

    def resource(self, rtype: str, name: str | None = None) -> dict[str, Any]:
        named = self.resources.get(rtype, {})
        assert named, f"no {rtype} resource"
        if name is None:
            assert len(named) == 1, f"several {rtype}: {sorted(named)}"
            return next(iter(named.values()))
        return named[name]


_POLICY_REF = re.compile(r"^\$\{local\.cdn_policy\.([A-Za-z0-9_.]+)\}$")


def resolve(value: Any, policy: dict[str, Any] | None = None) -> Any:
    """``${local.cdn_policy.a.b}`` -> the value at a.b in the policy file; anything else unchanged."""
    if isinstance(value, str) and (match := _POLICY_REF.match(value)):
        node: Any = policy if policy is not None else json.loads(POLICY_PATH.read_text())
        for part in match.group(1).split("."):
            node = node[part]
        return node
    return value


def load_tfvars(path: Path) -> dict[str, Any]:
    return parse(path)
