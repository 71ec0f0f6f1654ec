"""Domain errors with stable, machine-readable reason codes.

The codes are part of the results-topic contract (``error.code``): clients switch on them, so never rename one.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID_EVENT = "INVALID_EVENT"  # the upload-complete event is not valid JSON or misses fields
    IMAGE_NOT_FOUND = "IMAGE_NOT_FOUND"  # neither the CDN nor S3 has the object
    FETCH_FAILED = "FETCH_FAILED"  # CDN and S3 both failed for another reason
    IMAGE_TOO_LARGE = "IMAGE_TOO_LARGE"  # bytes over the cap, or pixels over the decompression-bomb guard
    IMAGE_UNDECODABLE = "IMAGE_UNDECODABLE"  # corrupt, truncated or not an image
    UNSUPPORTED_FORMAT = "UNSUPPORTED_FORMAT"  # an image, but not a format we accept
    MODEL_UNAVAILABLE = "MODEL_UNAVAILABLE"  # the vision model kept failing (429/5xx/connection) after retries
    MODEL_TIMEOUT = "MODEL_TIMEOUT"  # the vision model did not answer in time, after retries
    MODEL_OUTPUT_INVALID = "MODEL_OUTPUT_INVALID"  # the model answered, but not with a valid classification
    MODEL_REQUEST_REJECTED = "MODEL_REQUEST_REJECTED"  # the endpoint refused the request as invalid (400/404)
    MODEL_REFUSED = "MODEL_REFUSED"  # the model declined to classify the photo (a refusal; not retried)
    MODEL_BUDGET_EXCEEDED = "MODEL_BUDGET_EXCEEDED"  # MODEL_CALLS_PER_MINUTE or _PER_DAY used up: not paid for
    INTERNAL_ERROR = "INTERNAL_ERROR"  # a bug: logged with a traceback, the job still gets its result
    IMAGE_REFUSED = "IMAGE_REFUSED"  # an image the guards refuse for its shape: aspect ratio, frames, scans, metadata
    IMAGE_CHANGED = "IMAGE_CHANGED"  # the object's bytes changed between hashing and classification


class PipelineError(Exception):
    """An expected, per-event failure: the job ends as ``failed`` with this code."""

    def __init__(self, code: ErrorCode, message: str, *, detail: str | None = None) -> None:
        super().__init__(f"{code}: {message}" + (f" ({detail})" if detail else ""))
        self.code = code
        self.message = message  # sent to the client: names no internal host, port, bucket or path
        self.detail = detail  # for logs and dead letters only
