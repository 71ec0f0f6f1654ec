"""The app's side of the API: ask for a job, upload with the pre-signed POST, say the upload is complete, and
follow the job over the WebSocket (api/README.md)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

ANALYZE = "/api/v1/waste/analyze"


class ApiError(AssertionError):
    """The API answered with another status than the flow expects."""

    def __init__(self, what: str, status: int, body: str) -> None:
        super().__init__(f"{what}: HTTP {status}: {body[:500]}")
        self.status = status


async def analyze(http: aiohttp.ClientSession, base: str, *, headers: dict[str, str] | None = None,
                  **body: Any) -> dict[str, Any]:
    """``POST /analyze``: the job id, its token and the pre-signed upload (``upload_url``, ``upload_fields``)."""
    async with http.post(f"{base}{ANALYZE}", json=body or None, headers=headers) as resp:
        if resp.status != 200:
            raise ApiError("analyze", resp.status, await resp.text())
        return await resp.json()  # type: ignore[no-any-return]


async def post_upload(http: aiohttp.ClientSession, job: dict[str, Any], data: bytes, *,
                      content_type: str | None = None, fields: dict[str, str] | None = None) -> tuple[int, str]:
    """The browser's upload: a multipart form of the policy's fields (``fields`` override them; ``content_type``
    is sent as the Content-Type field and the file's type), then the file. Returns the status and body."""
    form_fields = {**job["upload_fields"], **(fields or {})}
    if content_type is not None:
        form_fields["Content-Type"] = content_type
    file_type = content_type or form_fields.get("Content-Type") or job.get("content_type") or "image/jpeg"
    form = aiohttp.FormData()
    for name, value in form_fields.items():
        form.add_field(name, value)
    form.add_field("file", data, filename="photo.jpg", content_type=file_type)
    async with http.post(job["upload_url"], data=form) as resp:
        return resp.status, await resp.text()


async def upload_complete(http: aiohttp.ClientSession, base: str, job: dict[str, Any],
                          headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    auth = {"Authorization": f"Bearer {job['token']}", **(headers or {})}
    async with http.post(f"{base}/api/v1/waste/upload-complete/{job['job_id']}", headers=auth) as resp:
        return resp.status, await resp.json(content_type=None)


def ws_url(base: str, job: dict[str, Any] | None = None) -> str:
    url = f"{base.replace('http', 'ws', 1)}/api/v1/waste/ws"
    return f"{url}?job_id={job['job_id']}&token={job['token']}" if job is not None else url


async def ws_result(ws: aiohttp.ClientWebSocketResponse, job_id: str, timeout: float = 120.0
                    ) -> tuple[list[str], dict[str, Any] | None]:
    """Read the socket until the job's result: the states seen, and the result (None if the socket closed)."""
    states: list[str] = []
    async with asyncio.timeout(timeout):
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = msg.json()
            if data.get("type") == "result" and data.get("job_id") == job_id:
                return states, data["result"]
            if data.get("type") == "state":
                states.append(data["state"])
    return states, None
