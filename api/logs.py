"""Logging set-up for the entry point, and an access log that never writes query strings.

The WebSocket takes ``?token=`` and pre-signed URLs carry signatures: the default access log format
(``%r``, the whole request line) would write both to the log. Paths are clipped, and every message goes
through ``streams.logs`` (control characters escaped; ``LOG_FORMAT=json`` for one JSON object per line).
"""

from __future__ import annotations

import logging

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from streams import logs

MAX_LOGGED_PATH = 200


class PathOnlyAccessLogger(AbstractAccessLogger):
    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        path = request.path
        if len(path) > MAX_LOGGED_PATH:
            path = path[:MAX_LOGGED_PATH] + "..."
        self.logger.info(
            '%s "%s %s" %s %s %.1fms',
            request.remote,
            request.method[:16],
            path,
            response.status,
            response.body_length,
            time * 1000,
        )


def configure_logging(level: str, log_format: str = "text") -> None:
    """Configure the root logger once; a second call (or handlers set by a host process) changes nothing."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logs.formatter(log_format))
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
