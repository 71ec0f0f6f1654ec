"""Render the local CDN edge's VCL (stack/edge.vcl) from the same policy CloudFront is built from.

``infra/cdn-policy.json`` holds the TTLs (min / default / max) and the response headers. Terraform reads it with
``jsondecode(file())`` for CloudFront's cache and response-headers policies (infra/terraform/cdn.tf); this module
puts the same numbers and header values into the Varnish edge, so the two cannot drift
(tests/infra/test_cdn_policy.py fails when they do).

    python -m tools.edge_vcl --origin-host 127.0.0.1 --origin-port 7070 --out /tmp/edge.vcl

Standard library only: ``scripts/stack.sh`` and the compose file's ``edge-config`` service run it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

REPO_DIR = Path(__file__).resolve().parent.parent
POLICY_PATH = REPO_DIR / "infra" / "cdn-policy.json"
TEMPLATE_PATH = REPO_DIR / "stack" / "edge.vcl"

# A value goes into a VCL long string {"..."}: it must not close it, and a header value has no line breaks.
_UNSAFE = re.compile(r'"\}|[\r\n\x00]')


def load_policy(path: Path = POLICY_PATH) -> dict[str, Any]:
    policy: dict[str, Any] = json.loads(path.read_text())
    ttl = policy["ttl_seconds"]
    if not 0 <= ttl["min"] <= ttl["default"] <= ttl["max"]:
        raise ValueError(f"{path}: TTLs must satisfy 0 <= min <= default <= max, got {ttl}")
    return policy


def response_headers(policy: dict[str, Any]) -> dict[str, str]:
    """The headers every edge response carries, spelled as CloudFront's response-headers policy sends them."""
    spec = policy["response_headers"]
    headers: dict[str, str] = {}
    if spec.get("content_type_options_nosniff"):
        headers["X-Content-Type-Options"] = "nosniff"
    if hsts := spec.get("strict_transport_security"):
        value = f"max-age={int(hsts['max_age_seconds'])}"
        if hsts.get("include_subdomains"):
            value += "; includeSubDomains"
        if hsts.get("preload"):
            value += "; preload"
        headers["Strict-Transport-Security"] = value
    if csp := spec.get("content_security_policy"):
        headers["Content-Security-Policy"] = csp
    if referrer := spec.get("referrer_policy"):
        headers["Referrer-Policy"] = referrer
    if frame := spec.get("frame_options"):
        headers["X-Frame-Options"] = frame
    return headers


def render(template: str, policy: dict[str, Any], *, origin_host: str, origin_port: int) -> str:
    ttl = policy["ttl_seconds"]
    lines = []
    for name, value in response_headers(policy).items():
        if _UNSAFE.search(value):
            raise ValueError(f"header {name} cannot be put into VCL: {value!r}")
        lines.append(f'    set resp.http.{name} = {{"{value}"}};')
    values = {
        "@ORIGIN_HOST@": origin_host,
        "@ORIGIN_PORT@": str(int(origin_port)),
        "@TTL_MIN@": str(int(ttl["min"])),
        "@TTL_DEFAULT@": str(int(ttl["default"])),
        "@TTL_MAX@": str(int(ttl["max"])),
        "@RESPONSE_HEADERS@": "\n".join(lines),
    }
    if not re.fullmatch(r"[A-Za-z0-9.\-:]+", origin_host):
        raise ValueError(f"origin host {origin_host!r} is not a host name or address")
    out = template
    for placeholder, value in values.items():
        if placeholder not in out:
            raise ValueError(f"the template has no {placeholder}")
        out = out.replace(placeholder, value)
    if leftover := re.findall(r"@[A-Z_]+@", out):
        raise ValueError(f"placeholders left unrendered: {sorted(set(leftover))}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--origin-host", required=True)
    parser.add_argument("--origin-port", type=int, required=True)
    parser.add_argument("--template", type=Path, default=TEMPLATE_PATH)
    parser.add_argument("--policy", type=Path, default=POLICY_PATH)
    parser.add_argument("--out", type=Path, help="write here (default: standard output)")
    args = parser.parse_args(argv)
    try:
        text = render(args.template.read_text(), load_policy(args.policy),
                      origin_host=args.origin_host, origin_port=args.origin_port)
    except (OSError, ValueError, KeyError) as exc:
        print(f"edge_vcl: {exc}", file=sys.stderr)
        return 1
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
