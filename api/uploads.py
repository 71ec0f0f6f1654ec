"""Pre-signed uploads to S3, the HEAD check before an upload is accepted, and deleting refused objects.

Two clients: one talks to S3 from the server (HEAD, DELETE), the other only signs for the host the *browser*
uses (settings.api_public_s3_url); signing makes no network calls.

Only a pre-signed POST is handed out: its policy makes the S3 server itself refuse an object over
``max_bytes`` or with any Content-Type but the one pinned for the job (checked on versitygw:
tests/security/test_api_uploads.py). A pre-signed PUT cannot bound the body's size, so there is none.
versitygw v1.7.0 counts each form part's headers into the size it checks, so a client that sends part headers
can get an empty file past the lower bound: upload-complete refuses and deletes empty objects.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from botocore.exceptions import ClientError

log = logging.getLogger("api.uploads")


@dataclass(frozen=True)
class PresignedUpload:
    post_url: str
    post_fields: dict[str, str]


@dataclass(frozen=True)
class ObjectHead:
    size: int
    content_type: str | None


class UploadStorage(Protocol):
    async def presign(self, key: str, content_type: str) -> PresignedUpload: ...
    async def head(self, key: str) -> ObjectHead | None: ...
    async def delete(self, key: str) -> None: ...


class StorageUnavailable(Exception):
    """S3 answered with something other than the object or 'not found'."""


def post_policy(max_bytes: int, content_type: str) -> tuple[dict[str, str], list[Any]]:
    """Fields and conditions of the POST policy. The S3 server enforces them, not us.

    Size: 1..max_bytes. Content type: exactly ``content_type`` (an allow-listed type; never a prefix, which
    would let ``image/svg+xml`` in).
    """
    return {"Content-Type": content_type}, [["content-length-range", 1, max_bytes], {"Content-Type": content_type}]


class S3Uploads:
    def __init__(self, *, server_client: Any, signing_client: Any, bucket: str, max_bytes: int, expires_s: int):
        self._server = server_client
        self._signer = signing_client
        self._bucket = bucket
        self._max_bytes = max_bytes
        self._expires_s = expires_s

    async def presign(self, key: str, content_type: str) -> PresignedUpload:
        fields, conditions = post_policy(self._max_bytes, content_type)
        post = await self._signer.generate_presigned_post(
            Bucket=self._bucket, Key=key, Fields=fields, Conditions=conditions, ExpiresIn=self._expires_s
        )
        return PresignedUpload(post_url=post["url"], post_fields=dict(post["fields"]))

    async def head(self, key: str) -> ObjectHead | None:
        try:
            resp = await self._server.head_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404 or exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise StorageUnavailable(f"HEAD failed with {status}") from exc
        except Exception as exc:  # connection errors come in several botocore/aiohttp flavours
            raise StorageUnavailable(type(exc).__name__) from exc
        return ObjectHead(size=int(resp.get("ContentLength", 0)), content_type=resp.get("ContentType"))

    async def delete(self, key: str) -> None:
        try:
            await self._server.delete_object(Bucket=self._bucket, Key=key)
        except Exception as exc:
            raise StorageUnavailable(type(exc).__name__) from exc
