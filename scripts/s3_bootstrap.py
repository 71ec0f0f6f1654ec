"""Create the local S3 bucket with its CORS rules and public-read policy (idempotent).

Run by ``scripts/stack.sh up`` after the S3 server answers, and by the ``s3-init``
service of ``docker-compose.kafka.yml``. The bucket policy grants anonymous
``s3:GetObject`` on every object: it is the local stand-in for CloudFront's origin
access, so the CDN edge (Varnish) can read objects without signing requests.

Settings come from the environment:
    S3_ENDPOINT_URL  (default http://127.0.0.1:$S3_PORT, S3_PORT default 7070)
    S3_ACCESS_KEY / S3_SECRET_KEY  (default test / testsecret)
    S3_BUCKET_NAME   (default waste-images)
    AWS_REGION       (default us-east-1)
    S3_BOOTSTRAP_TIMEOUT  seconds to wait for the server (default 30)
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

CORS_RULES = {
    "CORSRules": [
        {
            "AllowedOrigins": ["*"],
            "AllowedMethods": ["GET", "PUT", "POST", "HEAD"],
            "AllowedHeaders": ["*"],
            "ExposeHeaders": ["ETag"],
            "MaxAgeSeconds": 3000,
        }
    ]
}


def public_read_policy(bucket: str) -> str:
    """Anonymous GetObject on every key: what the CDN origin needs, nothing more."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "LocalCdnOriginRead",
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": "s3:GetObject",
                    "Resource": f"arn:aws:s3:::{bucket}/*",
                }
            ],
        }
    )


async def wait_for_server(s3, deadline: float) -> None:
    """Poll ListBuckets until the server answers or the deadline passes."""
    while True:
        try:
            await s3.list_buckets()
            return
        except (BotoCoreError, ClientError, OSError) as exc:
            if time.monotonic() > deadline:
                raise SystemExit(f"s3_bootstrap: S3 server not answering: {exc}") from None
            await asyncio.sleep(0.2)


async def ensure_bucket(s3, bucket: str) -> bool:
    """Create the bucket unless it exists. Returns True when it was created."""
    try:
        await s3.head_bucket(Bucket=bucket)
        return False
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code not in ("404", "NoSuchBucket", "NotFound"):
            raise
    try:
        await s3.create_bucket(Bucket=bucket)
    except ClientError as exc:
        # Lost a race with another bootstrap run: fine.
        if exc.response.get("Error", {}).get("Code") not in (
            "BucketAlreadyOwnedByYou",
            "BucketAlreadyExists",
        ):
            raise
    return True


async def main() -> int:
    port = os.environ.get("S3_PORT", "7070")
    endpoint = os.environ.get("S3_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    bucket = os.environ.get("S3_BUCKET_NAME", "waste-images")
    region = os.environ.get("AWS_REGION", "us-east-1")
    timeout = float(os.environ.get("S3_BOOTSTRAP_TIMEOUT", "30"))

    session = get_session()
    async with session.create_client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=os.environ.get("S3_ACCESS_KEY", "test"),
        aws_secret_access_key=os.environ.get("S3_SECRET_KEY", "testsecret"),
        # path style: the local server has no wildcard DNS for virtual-host buckets
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    ) as s3:
        await wait_for_server(s3, time.monotonic() + timeout)
        created = await ensure_bucket(s3, bucket)
        # CORS and policy are PUT every time: cheap, and it repairs a hand-edited bucket.
        await s3.put_bucket_cors(Bucket=bucket, CORSConfiguration=CORS_RULES)
        await s3.put_bucket_policy(Bucket=bucket, Policy=public_read_policy(bucket))
    state = "created" if created else "exists"
    print(f"s3_bootstrap: bucket {bucket} {state}; CORS + public-read policy applied ({endpoint})")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
