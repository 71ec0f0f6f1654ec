"""CDN-first image fetch with an S3 fallback, reporting which source served the bytes and the edge's X-Cache.

Order (DESIGN.md §3): GET ``{CDN_BASE_URL}/{key}`` with one shared aiohttp session; on a connection error,
timeout, 5xx, 403/404 or a truncated body, log a warning and read the object with S3 GetObject (aiobotocore).
``CDN_ENABLED=false`` reads S3 only (a worker in the bucket's region pays nothing for S3 transfer).

When both fail for a reason that passes (an S3 outage, a network blip), :meth:`ImageFetcher.fetch_patiently`
tries again with backoff for up to ``FETCH_RETRY_SECONDS``: the job waits out the outage instead of failing.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import aiohttp

from models.errors import ErrorCode, PipelineError
from models.records import FetchInfo, FetchSource
from models.settings import Settings
from streams import metrics
from streams.upload_checks import unsafe_key_reason

log = logging.getLogger(__name__)

_CHUNK = 256 * 1024
# Backoff between fetch attempts while both sources fail: doubling from the first, capped, with jitter so the
# jobs an outage held back do not return at the same instant.
RETRY_FIRST_DELAY_S = 0.5
RETRY_MAX_DELAY_S = 5.0


@dataclass(frozen=True, slots=True)
class FetchedImage:
    data: bytes
    info: FetchInfo


class _CdnUnusable(Exception):
    """The edge could not serve this object; S3 may still have it.

    ``str()`` is a short reason without host, port or path (it goes into results as ``fetch.cdn_error``);
    ``detail`` is for the log.
    """

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(reason)
        self.detail = detail or reason


def parse_cdn_cache(headers: Any) -> Literal["hit", "miss", "unknown"]:
    """One parser for CloudFront (``Hit from cloudfront``, ``RefreshHit ...``) and the local edge (``HIT``)."""
    token = (headers.get("X-Cache") or "").split(" ")[0].strip().lower()
    if token in ("hit", "refreshhit"):
        return "hit"
    if token == "miss":
        return "miss"
    return "unknown"


def cdn_url(settings: Settings, key: str) -> str:
    return f"{settings.cdn_base_url}/{quote(key, safe='/')}"


class ImageFetcher:
    def __init__(self, settings: Settings, http: aiohttp.ClientSession, s3: Any) -> None:
        self._settings = settings
        self._http = http
        self._s3 = s3

    async def fetch_patiently(self, bucket: str, key: str) -> FetchedImage:
        """:meth:`fetch`, tried again while it fails with FETCH_FAILED (both sources down or timing out), for up
        to ``FETCH_RETRY_SECONDS``. A missing, refused or oversized object fails at once: waiting cannot fix it."""
        deadline = time.monotonic() + self._settings.fetch_retry_seconds
        delay = RETRY_FIRST_DELAY_S
        while True:
            try:
                return await self.fetch(bucket, key)
            except PipelineError as exc:
                wait = delay * random.uniform(0.8, 1.2)
                if exc.code is not ErrorCode.FETCH_FAILED or time.monotonic() + wait > deadline:
                    raise
                metrics.fetch_retries_total.inc()
                log.warning("key=%s: fetch failed (%s); trying again in %.1fs", key, exc.detail or exc.message, wait)
                await asyncio.sleep(wait)
                delay = min(delay * 2, RETRY_MAX_DELAY_S)

    async def fetch(self, bucket: str, key: str) -> FetchedImage:
        """One attempt: the CDN, then S3."""
        settings = self._settings
        # Events are checked before they get here (streams/upload_checks.py); this is the last line: the fetcher
        # reads the configured bucket only, and no key that could leave the bucket's path on the CDN.
        if bucket != settings.s3_bucket_name or (reason := unsafe_key_reason(key)) is not None:
            raise PipelineError(ErrorCode.INVALID_EVENT, "the event's object is not acceptable",
                                detail=f"bucket={bucket!r:.80} key={key!r:.300}: "
                                       f"{'another bucket' if bucket != settings.s3_bucket_name else reason}")
        cdn_error: str | None = None
        if settings.cdn_enabled:
            try:
                fetched = await self._from_cdn(key)
                metrics.fetched_bytes_total.labels(source=FetchSource.CDN.value).inc(len(fetched.data))
                return fetched
            except _CdnUnusable as exc:
                cdn_error = str(exc)
                log.warning("CDN fetch failed for key=%s (%s); falling back to S3", key, exc.detail)
        data = await self._from_s3(bucket, key)
        metrics.fetched_bytes_total.labels(source=FetchSource.S3.value).inc(len(data))
        return FetchedImage(data, FetchInfo(source=FetchSource.S3, bytes=len(data), cdn_error=cdn_error))

    async def _from_cdn(self, key: str) -> FetchedImage:
        url = cdn_url(self._settings, key)
        timeout = aiohttp.ClientTimeout(total=self._settings.fetch_timeout_seconds)
        try:
            async with self._http.get(url, timeout=timeout) as resp:
                if resp.status >= 300:
                    raise _CdnUnusable(f"HTTP {resp.status}", f"HTTP {resp.status} from {url}")
                self._check_declared_size(resp.content_length)
                data = await _read_capped(resp.content, self._settings.max_image_bytes)
                if resp.content_length is not None and len(data) != resp.content_length:
                    raise _CdnUnusable("truncated body", f"truncated body: {len(data)} of {resp.content_length} bytes")
                age = resp.headers.get("Age")
                info = FetchInfo(
                    source=FetchSource.CDN,
                    cdn_cache=parse_cdn_cache(resp.headers),
                    bytes=len(data),
                    cdn_age_s=int(age) if age and age.isdigit() else None,
                )
                return FetchedImage(data, info)
        except TimeoutError as exc:
            raise _CdnUnusable("timeout", f"timeout after {self._settings.fetch_timeout_seconds}s: {url}") from exc
        except aiohttp.ClientPayloadError as exc:  # the body ended before its Content-Length: aiohttp noticed first
            raise _CdnUnusable("truncated body", f"truncated body: {type(exc).__name__}: {exc}") from exc
        except aiohttp.ClientError as exc:  # its text names the edge's host and port: logs only
            raise _CdnUnusable(type(exc).__name__, f"{type(exc).__name__}: {exc}") from exc

    async def _from_s3(self, bucket: str, key: str) -> bytes:
        try:
            resp = await asyncio.wait_for(
                self._s3.get_object(Bucket=bucket, Key=key), timeout=self._settings.fetch_timeout_seconds
            )
        except TimeoutError as exc:
            raise PipelineError(ErrorCode.FETCH_FAILED, "the image could not be fetched in time",
                                detail=f"S3 GetObject timed out: s3://{bucket}/{key}") from exc
        except Exception as exc:  # botocore raises ClientError subclasses built at run time
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound", "NoSuchBucket"):
                raise PipelineError(ErrorCode.IMAGE_NOT_FOUND, "the image does not exist",
                                    detail=f"s3://{bucket}/{key} does not exist") from exc
            raise PipelineError(ErrorCode.FETCH_FAILED, "the image could not be fetched",
                                detail=f"S3 GetObject failed: {code or type(exc).__name__}: {exc}") from exc
        self._check_declared_size(resp.get("ContentLength"))
        try:
            async with resp["Body"] as body:
                data = await asyncio.wait_for(
                    _read_body(body, self._settings.max_image_bytes), timeout=self._settings.fetch_timeout_seconds
                )
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise PipelineError(ErrorCode.FETCH_FAILED, "the image could not be fetched",
                                detail=f"S3 body read failed: {type(exc).__name__}: {exc}") from exc
        declared = resp.get("ContentLength")
        if declared is not None and len(data) != declared:
            raise PipelineError(ErrorCode.FETCH_FAILED, "the image could not be fetched",
                                detail=f"S3 body truncated: {len(data)} of {declared} bytes")
        return data

    def _check_declared_size(self, size: int | None) -> None:
        if size is not None and size > self._settings.max_image_bytes:
            raise PipelineError(
                ErrorCode.IMAGE_TOO_LARGE, f"object is {size} bytes, limit {self._settings.max_image_bytes}"
            )


async def _read_body(body: Any, cap: int) -> bytes:
    """Read an S3 body to its end: one ``read(n)`` may return only what has arrived so far."""
    chunks: list[bytes] = []
    total = 0
    while chunk := await body.read(_CHUNK):
        total += len(chunk)
        if total > cap:
            raise PipelineError(ErrorCode.IMAGE_TOO_LARGE, f"object is over the limit of {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_capped(stream: aiohttp.StreamReader, cap: int) -> bytes:
    """Read at most ``cap`` bytes; a body that would go past it is refused without buffering it all."""
    chunks: list[bytes] = []
    total = 0
    async for chunk in stream.iter_chunked(_CHUNK):
        total += len(chunk)
        if total > cap:
            raise PipelineError(ErrorCode.IMAGE_TOO_LARGE, f"object is over the limit of {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
