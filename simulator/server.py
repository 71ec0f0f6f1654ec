"""The simulator's aiohttp application: OpenAI-compatible routes plus the ``/_sim/*`` control routes.

All mutable state lives in one :class:`SimState` per application, so every test server starts clean.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import ValidationError

from simulator.answers import classify, malformed_content
from simulator.faults import (
    INJECTED_FAULTS,
    ConfigUpdate,
    Fault,
    SimConfig,
    SimMode,
    apply_update,
    latency_seconds,
    pick_fault,
)
from simulator.protocol import (
    MAX_IMAGE_PAYLOAD_BYTES,
    ChatRequest,
    ImageRef,
    RequestError,
    chat_completion,
    check_context,
    error_body,
    image_tokens,
    inspect_image,
    model_list,
    parse_chat_request,
)

log = logging.getLogger("simulator")

# Data-URL images are inline in the body; aiohttp's 1 MiB default would reject ordinary photos.
MAX_BODY_BYTES = 64 * 1024 * 1024
DOWNLOAD_TIMEOUT_S = 10.0  # an image URL the "model" must fetch
# What the x-ratelimit-* headers announce (a tier-5 account's gpt-4o limits, roughly).
RATE_LIMIT_REQUESTS = 10_000
RATE_LIMIT_TOKENS = 30_000_000
REFUSAL_TEXT = "I'm sorry, I can't help with that request."


@dataclass
class Stats:
    calls: int = 0  # every POST /v1/chat/completions received: what a real endpoint might bill
    ok: int = 0
    rejected: int = 0  # 400/401: never reached the "model"
    faults: dict[Fault, int] = field(default_factory=lambda: dict.fromkeys(INJECTED_FAULTS, 0))
    images: set[str] = field(default_factory=set)  # digests of classified (first) images
    in_flight: int = 0
    max_in_flight: int = 0
    image_tokens: int = 0  # prompt tokens spent on images, by OpenAI's rules for the detail sent
    last_rejection: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "simulator": True,
            "calls": self.calls,
            "ok": self.ok,
            "rejected": self.rejected,
            "faults": {str(k): v for k, v in self.faults.items()},
            "distinct_images": len(self.images),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "image_tokens": self.image_tokens,
            "last_rejection": self.last_rejection,
        }


class SimState:
    def __init__(self, startup: SimConfig) -> None:
        self.startup = startup
        self.config = startup
        self.script: deque[Fault] = deque()
        self.stats = Stats()
        self.rng = random.Random(startup.seed)
        self.malformed_count = 0
        # Set on shutdown so hung handlers return at once instead of holding shutdown for hang_s.
        self.shutting_down = asyncio.Event()

    def reset(self) -> None:
        in_flight = self.stats.in_flight  # still-running handlers will decrement it; keep it truthful
        self.config = self.startup
        self.script.clear()
        self.stats = Stats(in_flight=in_flight, max_in_flight=in_flight)
        self.rng = random.Random(self.startup.seed)
        self.malformed_count = 0

    def next_fault(self) -> Fault:
        # The script wins so tests can say exactly what the next calls get; rates apply once it is empty.
        if self.script:
            return self.script.popleft()
        return pick_fault(self.config.rates, self.rng.random())

    def config_json(self) -> dict[str, Any]:
        shown = self.config.to_json()
        shown["api_key"] = "set" if shown["api_key"] else ""
        return {**shown, "script": [str(f) for f in self.script]}

    @contextmanager
    def tracking_in_flight(self) -> Iterator[None]:
        # The stats object is looked up again on exit: a reset while the request ran replaced it.
        self.stats.in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
        try:
            yield
        finally:
            self.stats.in_flight -= 1


STATE = web.AppKey("simulator_state", SimState)
HTTP = web.AppKey("simulator_http", aiohttp.ClientSession)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def openai_error(
    status: int, message: str, error_type: str, *, param: str | None = None, code: str | None = None
) -> web.Response:
    return web.json_response(error_body(message, error_type, param=param, code=code), status=status)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn aiohttp's plain-text 404/405/413 into the OpenAI error envelope the client expects."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return openai_error(exc.status, exc.reason, "invalid_request_error")


async def _label_response(request: web.Request, response: web.StreamResponse) -> None:
    # Every answer, including errors and 404s, says it is not a real model.
    response.headers["x-simulator"] = "true"


async def _release_hung(app: web.Application) -> None:
    app[STATE].shutting_down.set()


def _bearer_token(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _auth_error(request: web.Request, config: SimConfig) -> web.Response | None:
    """[ERR] 401 without a key, or with one other than ``SIM_API_KEY`` when that is set."""
    token = _bearer_token(request)
    if token is None:
        return openai_error(401, "You didn't provide an API key. You need to provide your API key in an "
                                 "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                            "invalid_request_error", code="invalid_api_key")
    if config.api_key and not hmac.compare_digest(token.encode(), config.api_key.encode()):
        shown = token[:3] + "****" + token[-4:] if len(token) > 8 else "****"
        return openai_error(401, f"Incorrect API key provided: {shown}.", "invalid_request_error",
                            code="invalid_api_key")
    return None


def _rate_limit_headers(response: web.StreamResponse, config: SimConfig, used: int) -> None:
    # [ERR] "Rate limits": every answer carries the account's limits and what is left of them.
    reset = f"{max(config.retry_after_s, 0.001):g}s"
    remaining = max(0, RATE_LIMIT_REQUESTS - used)
    response.headers.update({
        "x-ratelimit-limit-requests": str(RATE_LIMIT_REQUESTS),
        "x-ratelimit-remaining-requests": str(remaining),
        "x-ratelimit-reset-requests": reset,
        "x-ratelimit-limit-tokens": str(RATE_LIMIT_TOKENS),
        "x-ratelimit-remaining-tokens": str(remaining * (RATE_LIMIT_TOKENS // RATE_LIMIT_REQUESTS)),
        "x-ratelimit-reset-tokens": reset,
    })


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    state.stats.calls += 1
    config = state.config  # one consistent config for the whole request, even if updated meanwhile
    with state.tracking_in_flight():
        if (refused := _auth_error(request, config)) is not None:
            state.stats.rejected += 1
            return refused
        try:
            chat = parse_chat_request(json.loads(await request.read()), strict=config.mode is SimMode.STRICT)
            chat.image_infos = [inspect_image(await _image_bytes(request.app, ref), ref.detail)
                                for ref in chat.images]
            check_context(chat)
        except RequestError as exc:
            state.stats.rejected += 1
            state.stats.last_rejection = exc.message
            log.info("rejected (HTTP %s, param %s): %s", exc.status, exc.param, exc.message)
            return openai_error(exc.status, exc.message, exc.error_type, param=exc.param, code=exc.code)
        except ValueError:  # JSONDecodeError, UnicodeDecodeError
            state.stats.rejected += 1
            return openai_error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
        except web.HTTPRequestEntityTooLarge as exc:
            state.stats.rejected += 1
            return openai_error(413, exc.text or "Request body too large.", "invalid_request_error")

        digest = chat.image_infos[0].digest
        state.stats.images.add(digest)
        state.stats.image_tokens += sum(image_tokens(info, chat.spec) for info in chat.image_infos)
        fault = state.next_fault()
        if fault is Fault.OK:
            state.stats.ok += 1
        else:
            state.stats.faults[fault] += 1
            log.info("injecting fault %s", fault)
        response = await _answer(state, config, chat, digest, fault)
        _rate_limit_headers(response, config, state.stats.calls)
        return response


async def _image_bytes(app: web.Application, ref: ImageRef) -> bytes:
    """One part's image: inline, or downloaded as the real endpoint does (bounded in time and size)."""
    if ref.data is not None:
        return ref.data
    assert ref.url is not None
    where = f"{ref.where}.image_url.url"
    try:
        async with app[HTTP].get(ref.url, timeout=aiohttp.ClientTimeout(total=DOWNLOAD_TIMEOUT_S)) as response:
            if response.status != 200:
                raise RequestError(f"Error while downloading {ref.url}.", where, "invalid_image_url")
            data = await response.content.read(MAX_IMAGE_PAYLOAD_BYTES + 1)
    except (aiohttp.ClientError, TimeoutError):
        raise RequestError(f"Timeout while downloading {ref.url}.", where, "invalid_image_url") from None
    if len(data) > MAX_IMAGE_PAYLOAD_BYTES:
        raise RequestError(f"The image at {ref.url} is too large.", where, "invalid_image_url")
    return data


async def _answer(
    state: SimState, config: SimConfig, chat: ChatRequest, digest: str, fault: Fault
) -> web.Response:
    if fault is Fault.RATE_LIMIT:
        # A rate limiter rejects at the edge, before any inference time is spent.
        return _rate_limited(config.retry_after_s)
    if fault is Fault.HANG:
        return await _hang(state, config.hang_s)
    if fault is Fault.OVERLOADED:
        return openai_error(503, "The engine is currently overloaded, please try again later.", "server_error")

    await asyncio.sleep(latency_seconds(config, state.rng.random()))
    if fault is Fault.SERVER_ERROR:
        return openai_error(500, "The simulator injected a server error.", "server_error")
    created = int(time.time())
    if fault is Fault.REFUSAL:
        return web.json_response(chat_completion(chat, None, created, refusal=REFUSAL_TEXT))
    if fault is Fault.MALFORMED:
        content = malformed_content(state.malformed_count, digest)
        state.malformed_count += 1
    else:
        content = classify(digest).model_dump_json()
    return web.json_response(chat_completion(chat, content, created, truncate=fault is Fault.TRUNCATED))


def _rate_limited(retry_after_s: float) -> web.Response:
    response = openai_error(
        429, "Rate limit reached (injected by the simulator).", "requests", code="rate_limit_exceeded"
    )
    # Seconds per the brief; the openai client prefers the millisecond header when both are present.
    response.headers["Retry-After"] = f"{retry_after_s:g}"
    response.headers["retry-after-ms"] = str(round(retry_after_s * 1000))
    return response


async def _hang(state: SimState, hang_s: float) -> web.Response:
    """Hold the request until the client gives up (the handler is cancelled), hang_s passes, or shutdown."""
    try:
        await asyncio.wait_for(state.shutting_down.wait(), timeout=hang_s)
        return openai_error(503, "The simulator is shutting down.", "server_error")
    except TimeoutError:
        return openai_error(504, "The simulator hung this request on purpose.", "server_error")


async def _http_session(app: web.Application):  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as session:
        app[HTTP] = session
        yield


async def list_models(request: web.Request) -> web.Response:
    if (refused := _auth_error(request, request.app[STATE].config)) is not None:
        return refused
    return web.json_response(model_list(created=int(time.time())))


async def get_config(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].config_json())


async def post_config(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        update = ConfigUpdate.model_validate(json.loads(await request.read()))
        new_config = apply_update(state.config, update)
    except ValidationError as exc:
        return openai_error(400, _describe(exc), "invalid_request_error")
    except ValueError as exc:  # bad JSON, or a rate for "ok"
        return openai_error(400, str(exc), "invalid_request_error")
    state.config = new_config
    if update.script is not None:
        state.script = deque(update.script)
    log.info("config updated: %s", state.config_json())
    return web.json_response(state.config_json())


def _describe(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].stats.to_json())


async def post_reset(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.reset()
    log.info("reset to start-up config and zeroed stats")
    return web.json_response({"config": state.config_json(), "stats": state.stats.to_json()})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "simulator": True})


def create_app(config: SimConfig | None = None) -> web.Application:
    """The simulator application; ``config`` is the start-up config that ``/_sim/reset`` restores."""
    app = web.Application(middlewares=[json_errors], client_max_size=MAX_BODY_BYTES)
    app[STATE] = SimState(config or SimConfig())
    app.on_response_prepare.append(_label_response)
    app.on_shutdown.append(_release_hung)
    app.cleanup_ctx.append(_http_session)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/_sim/config", get_config)
    app.router.add_post("/_sim/config", post_config)
    app.router.add_get("/_sim/stats", get_stats)
    app.router.add_post("/_sim/reset", post_reset)
    app.router.add_get("/healthz", healthz)
    return app
