"""Pre-signed uploads to S3 and the HEAD check before an upload is accepted.

Two clients: one talks to S3 from the server (HEAD), the other only signs URLs for the host the *browser*
uses (settings.api_public_s3_url). A pre-signed PUT signs the Host header, so it must name that host;
it makes no network calls.
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
    put_url: str


@dataclass(frozen=True)
class ObjectHead:
    size: int
    content_type: str | None


class UploadStorage(Protocol):
    async def presign(self, key: str, content_type: str | None = None) -> PresignedUpload: ...
    async def head(self, key: str) -> ObjectHead | None: ...


class StorageUnavailable(Exception):
    """S3 answered with something other than the object or 'not found'."""


def post_policy(max_bytes: int, content_type: str | None) -> tuple[dict[str, str], list[Any]]:
    """Fields and conditions of the POST policy. The S3 server enforces them, not us.

    Size: 1..max_bytes. Content type: pinned when the client declared one, else any ``image/*`` that the
    client sends as the ``Content-Type`` form field.
    """
    conditions: list[Any] = [["content-length-range", 1, max_bytes]]
    if content_type is None:
        return {}, [*conditions, ["starts-with", "$Content-Type", "image/"]]
    return {"Content-Type": content_type}, [*conditions, {"Content-Type": content_type}]


class S3Uploads:
    def __init__(self, *, server_client: Any, signing_client: Any, bucket: str, max_bytes: int, expires_s: int):
        self._server = server_client
        self._signer = signing_client
        self._bucket = bucket
        self._max_bytes = max_bytes
        self._expires_s = expires_s

    async def presign(self, key: str, content_type: str | None = None) -> PresignedUpload:
        fields, conditions = post_policy(self._max_bytes, content_type)
        post = await self._signer.generate_presigned_post(
            Bucket=self._bucket, Key=key, Fields=fields, Conditions=conditions, ExpiresIn=self._expires_s
        )
        put_params = {"Bucket": self._bucket, "Key": key}
        if content_type is not None:
            put_params["ContentType"] = content_type  # signed: the PUT must send exactly this Content-Type
        put_url = await self._signer.generate_presigned_url("put_object", Params=put_params, ExpiresIn=self._expires_s)
        return PresignedUpload(post_url=post["url"], post_fields=dict(post["fields"]), put_url=put_url)

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
