"""``python -m api``: run the HTTP/WebSocket API."""

from __future__ import annotations

import logging

from aiohttp import web

from api.app import create_app
from api.logs import PathOnlyAccessLogger, configure_logging
from models.settings import load_settings


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level)
    logging.getLogger("api").info("starting API on %s:%s", settings.api_host, settings.api_port)
    web.run_app(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        access_log=logging.getLogger("api.access"),
        access_log_class=PathOnlyAccessLogger,
        print=None,
    )


if __name__ == "__main__":
    main()
