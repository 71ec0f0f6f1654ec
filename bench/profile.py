"""Summarise a py-spy ``--format raw`` profile (collapsed stacks): where the worker's CPU samples go.

    python -m bench.profile bench/.cache/profile-worker-<pid>.txt
"""

from __future__ import annotations

import collections
import json
import re
import sys
from pathlib import Path
from typing import Any

# The first category (in this order) with a key in any frame of a sample's stack gets the sample. Main-thread
# stacks are cut to the callback the event loop is running (everything below Handle._run is the loop itself).
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("thumbnail for the model (resize + JPEG encode)", ("_thumbnail_jpeg",)),
    ("EXIF orientation", ("exif_transpose",)),
    ("pHash (imagehash: grey, resize, DCT)", ("phash (imagehash", "imagehash/")),
    ("JPEG open + draft decode (Pillow)", ("ImageFile.load", "JpegImagePlugin", "_open_checked", "Image.open")),
    ("fetch: HTTP body (aiohttp, streams/fetch.py)", ("streams/fetch.py", "aiohttp/")),
    ("Kafka client (aiokafka)", ("aiokafka/",)),
    ("Redis client", ("redis/",)),
    ("JSON / pydantic models", ("pydantic", "json/", "model_dump", "model_validate")),
    ("agents (pipeline code)", ("agents/", "streams/")),
    ("Faust / mode (streams, tables, commits)", ("faust/", "mode/")),
    ("event loop: select() waiting for I/O", ("EpollSelector.select",)),
    ("event loop: other", ("asyncio/",)),
)

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _frames(stack: str) -> list[str]:
    frames = [f for f in stack.split(";") if f and not f.startswith(("thread (", "process "))]
    # Drop the event loop's own frames above the callback it runs.
    for i in range(len(frames) - 1, -1, -1):
        if frames[i].startswith(("Handle._run (asyncio/events.py", "BaseEventLoop._run_once (")):
            return frames[i + 1:] or frames[i:]
    return frames


def _thread(stack: str) -> str:
    head = stack.split(";", 1)[0]
    name = head.split(": ", 1)[1] if head.startswith("thread (") and ": " in head else "?"
    if name.startswith("phash"):
        return "hash executor threads (phash_*)"
    if name == "MainThread":
        return "main thread (event loop: agents, producer)"
    return f"{name} (Faust consumer thread)" if name.startswith("Thread-") else name


def _short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    file = m.group("file")
    for marker in ("site-packages/", "lib/python3", "/work/main/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{m.group('func')} ({file})"


def summarize(path: Path, top: int = 12) -> dict[str, Any]:
    samples = 0
    by_category: collections.Counter[str] = collections.Counter()
    by_self: collections.Counter[str] = collections.Counter()
    by_thread: collections.Counter[str] = collections.Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        by_thread[_thread(stack)] += count
        frames = _frames(stack)
        if frames:
            by_self[_short(frames[-1])] += count
        category = next((name for name, keys in CATEGORIES if any(k in f for f in frames for k in keys)), "other")
        by_category[category] += count

    def share(counter: collections.Counter[str]) -> list[dict[str, Any]]:
        return [{"what": k, "pct": round(100 * v / samples, 1)} for k, v in counter.most_common(top)] if samples else []

    return {"samples": samples, "by_category": share(by_category), "top_self": share(by_self),
            "by_thread": share(by_thread)}


if __name__ == "__main__":
    print(json.dumps(summarize(Path(sys.argv[1])), indent=2))
