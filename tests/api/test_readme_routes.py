"""The docs and the routes agree: api/README.md names every route the app serves, and every API path a Markdown
document names is one the app serves (a renamed or mistyped route in the docs fails here)."""

from __future__ import annotations

import re
from pathlib import Path

from api.app import create_app
from models.settings import Settings
from tests.api.fakes import Fakes
from tests.unit.test_cited_docs import project_files

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "api" / "README.md"
API_PATH = re.compile(r"/api/v1/[A-Za-z0-9_{}./-]*")
PLACEHOLDER = re.compile(r"\{[^}]*\}")
UNDOCUMENTED = {"/", "/static"}  # the web page and its files


def test_every_route_is_in_the_api_readme(settings: Settings, fakes: Fakes) -> None:
    app = create_app(settings, backends=fakes.backends())
    text = README.read_text()
    routes = {(route.method, route.resource.canonical) for route in app.router.routes()
              if route.resource is not None and route.method != "HEAD"}
    missing = sorted(f"{method} {path}" for method, path in routes
                     if path not in UNDOCUMENTED and f"{method} {path}" not in text)
    assert missing == []


def test_every_api_path_in_the_docs_is_served(settings: Settings, fakes: Fakes) -> None:
    app = create_app(settings, backends=fakes.backends())
    served = {PLACEHOLDER.sub("{}", route.resource.canonical) for route in app.router.routes()
              if route.resource is not None}
    named = {
        (str(doc.relative_to(ROOT)), path)
        for doc in project_files(ROOT) if doc.suffix == ".md"
        for path in API_PATH.findall(doc.read_text())
        if not path.endswith("...")  # an elision ("/api/v1/..."), not a route
    }
    assert sorted((doc, path) for doc, path in named if PLACEHOLDER.sub("{}", path) not in served) == []
