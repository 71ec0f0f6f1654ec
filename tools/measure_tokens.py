"""What the thumbnail's size and the image ``detail`` do to the tokens (and dollars) of one model call.

Sends the worker's exact request (streams.vision.VisionClient.request_body) for each shipped sample photo, at each
thumbnail size and detail, to an OpenAI-compatible endpoint (by default the local simulator, which counts image
tokens by OpenAI's published rules: simulator/protocol.py image_tokens) and prints the mean billed tokens and
dollars per call at the price table (MODEL_PRICE_*_PER_1M_TOKENS). docs/COST.md has the figures.

    .venv/bin/python -m tools.measure_tokens [--base-url http://127.0.0.1:8090/v1] [--photos 27] [--json]

The thumbnail size is streams/imaging.py's THUMBNAIL_MAX_PX; this tool sets it per row for the measurement only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI

from models.errors import PipelineError
from models.settings import load_settings
from streams import cost, imaging
from streams.vision import VisionClient
from tools.photos import SAMPLES_DIR, image_files

SIZES = (256, 384, 512, 768, 1024, 2048)
DETAILS = ("low", "high")


def pick(folder: Path, count: int) -> list[Path]:
    """``count`` photos, spread over the class folders (round robin), in a stable order."""
    by_class: dict[str, list[Path]] = {}
    for path in image_files(folder):
        by_class.setdefault(path.parent.name, []).append(path)
    queues = [sorted(paths) for _, paths in sorted(by_class.items())]
    chosen: list[Path] = []
    while len(chosen) < count and any(queues):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    return chosen


def as_phone_photo(data: bytes, size: tuple[int, int]) -> bytes:
    """The photo enlarged to a phone camera's size (the shipped samples are ~0.3 MP; phones send 12 MP)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        out = io.BytesIO()
        image.convert("RGB").resize(size).save(out, "JPEG", quality=90)
        return out.getvalue()


async def measure(base_url: str, api_key: str, photos: list[Path],
                  phone: tuple[int, int] | None = None) -> list[dict[str, Any]]:
    rows = []
    originals = [p.read_bytes() for p in photos]
    if phone is not None:
        originals = [as_phone_photo(data, phone) for data in originals]
    async with AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=2, timeout=60) as client:
        for detail in DETAILS:
            settings = load_settings(vision_image_detail=detail, openai_base_url=base_url)
            vision = VisionClient(settings, client=client)
            for size in SIZES:
                imaging.THUMBNAIL_MAX_PX = size
                prompt, completion, dollars, sizes = [], [], [], []
                for data in originals:
                    try:
                        jpeg = imaging.make_thumbnail(data, max_pixels=settings.max_image_pixels)
                    except PipelineError as exc:  # refused by the worker's guards: the worker would not ask either
                        print(f"skipped one photo: {exc.code}: {exc.message}", file=sys.stderr)
                        continue
                    sizes.append(len(jpeg))
                    body = vision.request_body(imaging.thumbnail_data_url(jpeg))
                    answer = await client.chat.completions.create(**body)
                    usage = answer.usage
                    assert usage is not None, "the endpoint sent no usage"
                    prompt.append(usage.prompt_tokens)
                    completion.append(usage.completion_tokens)
                    dollars.append(cost.call_dollars(settings, usage.prompt_tokens, usage.completion_tokens))
                rows.append({
                    "detail": detail, "thumbnail_max_px": size, "photos": len(prompt),
                    "thumbnail_kb": round(statistics.mean(sizes) / 1024, 1),
                    "prompt_tokens": round(statistics.mean(prompt), 1),
                    "prompt_tokens_max": max(prompt),
                    "completion_tokens": round(statistics.mean(completion), 1),
                    "dollars_per_call": round(statistics.mean(dollars), 6),
                    "dollars_per_10000_calls": round(statistics.mean(dollars) * 10_000, 2),
                })
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    out = ["| detail | thumbnail max px | thumbnail KB | prompt tokens (mean / max) | completion tokens | $ per call "
           "| $ per 10,000 calls |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['detail']} | {r['thumbnail_max_px']} | {r['thumbnail_kb']} | {r['prompt_tokens']} / "
                   f"{r['prompt_tokens_max']} | {r['completion_tokens']} | {r['dollars_per_call']:.5f} | "
                   f"{r['dollars_per_10000_calls']:.2f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default=None, help="default: OPENAI_BASE_URL (the local simulator)")
    parser.add_argument("--photos-dir", type=Path, default=SAMPLES_DIR)
    parser.add_argument("--photos", type=int, default=27, help="how many photos (spread over the classes)")
    parser.add_argument("--phone", action="store_true", help="enlarge each photo to 4032x3024 first (a phone's)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    settings = load_settings()
    base_url = args.base_url or settings.openai_base_url or "http://127.0.0.1:8090/v1"
    rows = asyncio.run(measure(base_url, settings.openai_api_key.get_secret_value(),
                               pick(args.photos_dir, args.photos), (4032, 3024) if args.phone else None))
    print(json.dumps(rows, indent=1) if args.json else render(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
