"""api/README.md names every route the app serves, so a new endpoint cannot go undocumented."""

from __future__ import annotations

from pathlib import Path

from api.app import create_app
from models.settings import Settings
from tests.api.fakes import Fakes

README = Path(__file__).resolve().parents[2] / "api" / "README.md"
UNDOCUMENTED = {"/", "/static"}  # the web page and its files


def test_every_route_is_in_the_api_readme(settings: Settings, fakes: Fakes) -> None:
    app = create_app(settings, backends=fakes.backends())
    text = README.read_text()
    routes = {(route.method, route.resource.canonical) for route in app.router.routes()
              if route.resource is not None and route.method != "HEAD"}
    missing = sorted(f"{method} {path}" for method, path in routes
                     if path not in UNDOCUMENTED and f"{method} {path}" not in text)
    assert missing == []
