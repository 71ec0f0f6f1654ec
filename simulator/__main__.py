"""``python -m simulator``: run the vision model simulator.

Host and port come from ``--host``/``--port``, else ``SIM_HOST`` and ``SIM_PORT`` (or ``SIMULATOR_PORT``).
Latency and fault rates come from the ``SIM_*`` variables listed in :data:`simulator.faults.ENV_VARS`.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence

from aiohttp import web

from simulator.faults import config_from_env
from simulator.server import create_app

log = logging.getLogger("simulator")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8090


def _default_port(env: Mapping[str, str]) -> int:
    raw = env.get("SIM_PORT") or env.get("SIMULATOR_PORT") or str(DEFAULT_PORT)
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"SIM_PORT/SIMULATOR_PORT must be an integer, got {raw!r}") from None


def parse_args(argv: Sequence[str] | None, env: Mapping[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m simulator",
        description="VISION MODEL SIMULATOR: an OpenAI-compatible stand-in for the paid vision model.",
    )
    parser.add_argument("--host", default=env.get("SIM_HOST") or DEFAULT_HOST, help="bind address (env SIM_HOST)")
    parser.add_argument(
        "--port", type=int, default=_default_port(env), help="port (env SIM_PORT or SIMULATOR_PORT; 0 picks one)"
    )
    parser.add_argument(
        "--log-level", default=env.get("SIM_LOG_LEVEL") or "INFO", help="logging level (env SIM_LOG_LEVEL)"
    )
    parser.add_argument("--access-log", action="store_true", help="log every HTTP request (noisy under load)")
    return parser.parse_args(argv)


def _announce(message: str) -> None:
    # run_app's start-up message carries the bound address(es); restate it with the simulator label.
    match = re.search(r"Running on (.+?) =", message)
    where = match.group(1) if match else message
    log.info("VISION MODEL SIMULATOR (not a real model) listening on %s", where)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv, os.environ)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_env(os.environ)
    except ValueError as exc:
        sys.exit(str(exc))
    log.info("start-up config: %s", config.to_json())
    web.run_app(
        create_app(config),
        host=args.host,
        port=args.port,
        print=_announce,
        access_log=logging.getLogger("aiohttp.access") if args.access_log else None,
        # A client that gives up (timeout) cancels its handler, so hung requests do not pile up.
        handler_cancellation=True,
        # Hung handlers are released on shutdown, so a short grace period is enough.
        shutdown_timeout=5.0,
    )


if __name__ == "__main__":
    main()
