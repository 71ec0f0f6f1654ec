"""The app's side of the API: ask for a job, upload with the pre-signed POST, say the upload is complete, and
follow the job over the WebSocket (api/README.md)."""

from __future__ import annotations

import asyncio
import uuid
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


def browser_form(fields: dict[str, str], body: bytes, file_type: str = "image/jpeg") -> tuple[bytes, str]:
    """multipart/form-data the way a browser's FormData sends it: text fields carry no Content-Type part header,
    and the file part comes last (S3 ignores fields after it). Returns the body and its Content-Type.

    Not aiohttp.FormData: it adds "Content-Type: text/plain" to every field, and versitygw v1.7.0 then
    over-estimates the file size by those header bytes (~41 per field) when it checks content-length-range,
    rejecting uploads just under the limit.
    """
    boundary = uuid.uuid4().hex
    out = bytearray()
    for name, value in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    out += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="photo.jpg"\r\n'
            f"Content-Type: {file_type}\r\n\r\n").encode()
    out += body + f"\r\n--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


async def post_upload(http: aiohttp.ClientSession, job: dict[str, Any], data: bytes, *,
                      content_type: str | None = None, fields: dict[str, str] | None = None) -> tuple[int, str]:
    """The browser's upload with the pre-signed POST: the policy's fields (``fields`` override them;
    ``content_type`` is sent as the Content-Type field and the file's type), then the file. Returns the
    status and body."""
    form_fields = {**job["upload_fields"], **(fields or {})}
    if content_type is not None:
        form_fields["Content-Type"] = content_type
    file_type = content_type or form_fields.get("Content-Type") or job.get("content_type") or "image/jpeg"
    body, form_type = browser_form(form_fields, data, file_type)
    async with http.post(job["upload_url"], data=body, headers={"Content-Type": form_type}) as resp:
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
    """Read the socket until the job's result: the states seen (another kind of message is noted by its type,
    e.g. "error"), and the result (None if the socket closed first)."""
    states: list[str] = []
    async with asyncio.timeout(timeout):
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = msg.json()
            if data.get("type") == "result" and data.get("job_id") == job_id:
                return states, data["result"]
            states.append(data["state"] if data.get("type") == "state" else str(data.get("type")))
    return states, None
