"""Logging set-up for the entry point, and an access log that never writes query strings.

The WebSocket takes ``?token=`` and pre-signed URLs carry signatures: the default access log format
(``%r``, the whole request line) would write both to the log.
"""

from __future__ import annotations

import logging

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse


class PathOnlyAccessLogger(AbstractAccessLogger):
    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %s %.1fms',
            request.remote,
            request.method,
            request.path,
            response.status,
            response.body_length,
            time * 1000,
        )


def configure_logging(level: str) -> None:
    """Configure the root logger once; a second call (or handlers set by a host process) changes nothing."""
    root = logging.getLogger()
    if root.handlers:
        return
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
