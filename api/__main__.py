"""``python -m api``: run the HTTP/WebSocket API."""

from __future__ import annotations

import logging
import sys

from aiohttp import web

from api.app import create_app
from api.logs import PathOnlyAccessLogger, configure_logging
from models.settings import InsecureSettingsError, check_secrets, load_settings


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        check_secrets(settings)
    except InsecureSettingsError as exc:
        logging.getLogger("api").critical("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logging.getLogger("api").info("starting API on %s:%s (%s)", settings.api_host, settings.api_port, settings.app_env)
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
