"""``python -m tools.model_check``: send the worker's exact vision request, once, to the configured endpoint.

Run it before switching ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` / ``VISION_MODEL`` from the simulator to a real
endpoint: it prints whether the endpoint accepted the request (the strict answer schema above all), the
answer and whether it passes our own checks, the token usage and the latency. One call is paid for.
Exit status: 0 accepted and valid, 1 refused or invalid, 2 unreachable.

    .venv/bin/python -m tools.model_check                      # a shipped sample photo
    .venv/bin/python -m tools.model_check --photo my.jpg --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import openai
from openai import AsyncOpenAI
from pydantic import ValidationError

from models.classification import WasteClassification
from models.settings import Settings, load_settings
from streams.imaging import make_thumbnail, thumbnail_data_url
from streams.vision import RequestContractError, VisionClient
from tools.photos import SAMPLES_DIR, sample_photos


def default_photo() -> Path:
    return sample_photos(SAMPLES_DIR)[0]


async def check(settings: Settings, photo: Path) -> dict[str, Any]:
    """One call with the worker's request; a report of what the endpoint said."""
    report: dict[str, Any] = {"endpoint": settings.openai_base_url or "https://api.openai.com/v1",
                              "model": settings.vision_model, "photo": str(photo),
                              "image_detail": settings.vision_image_detail}
    client = AsyncOpenAI(api_key=settings.openai_api_key.get_secret_value(), base_url=settings.openai_base_url,
                         timeout=settings.vision_timeout_seconds, max_retries=0)
    try:
        vision = VisionClient(settings, client=client)
    except RequestContractError as exc:  # refused here, before anything is paid for
        return {**report, "accepted": False, "error": str(exc)}
    thumbnail = make_thumbnail(photo.read_bytes(), max_pixels=settings.max_image_pixels)
    body = vision.request_body(thumbnail_data_url(thumbnail))
    started = time.monotonic()
    try:
        raw = await client.chat.completions.with_raw_response.create(**body)
    except openai.APIStatusError as exc:
        return {**report, "accepted": False, "status": exc.status_code, "error": exc.body,
                "latency_ms": round((time.monotonic() - started) * 1000, 1)}
    except openai.APIConnectionError as exc:
        return {**report, "accepted": None, "error": f"cannot reach the endpoint: {exc}"}
    finally:
        await client.close()
    completion = raw.parse()
    choice = completion.choices[0]
    report.update(accepted=True, status=raw.http_response.status_code,
                  latency_ms=round((time.monotonic() - started) * 1000, 1),
                  answered_model=completion.model, system_fingerprint=completion.system_fingerprint,
                  simulated=raw.headers.get("x-simulator") == "true", finish_reason=choice.finish_reason,
                  refusal=choice.message.refusal, content=choice.message.content,
                  usage=completion.usage.model_dump() if completion.usage else None,
                  rate_limits={k: v for k, v in raw.headers.items() if k.lower().startswith("x-ratelimit-")})
    try:
        report["classification"] = WasteClassification.model_validate_json(choice.message.content or "").model_dump(
            mode="json")
        report["valid"] = True
    except ValidationError as exc:
        report["valid"] = False
        report["validation_error"] = str(exc).splitlines()[0]
    return report


def print_report(report: dict[str, Any]) -> None:
    print(f"endpoint   {report['endpoint']}  model {report['model']}  detail {report['image_detail']}")
    print(f"photo      {report['photo']}")
    if not report.get("accepted"):
        verdict = "UNREACHABLE" if report.get("accepted") is None else "REFUSED"
        print(f"request    {verdict} {report.get('status', '')}: {json.dumps(report.get('error'))}")
        return
    label = " (SIMULATOR: not a real model)" if report["simulated"] else ""
    print(f"request    accepted, HTTP {report['status']} in {report['latency_ms']} ms{label}")
    print(f"answer     finish_reason={report['finish_reason']} refusal={report['refusal']!r}")
    print(f"           {report.get('classification') or report.get('validation_error')}")
    print(f"usage      {report['usage']}")
    print(f"valid      {report['valid']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.model_check", description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path, help="the photo to send (default: the first shipped sample)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = asyncio.run(check(load_settings(), args.photo or default_photo()))
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print_report(report)
    if report.get("accepted") is None:
        return 2
    return 0 if report.get("accepted") and report.get("valid") else 1


if __name__ == "__main__":
    sys.exit(main())
