"""Photos for the demo, the producer, the tests and the bench: the set the repository ships, or any folder.

The repository ships ``samples/waste/<class>/*.jpg`` (90 real photos in 9 classes; ``samples/waste/SOURCE.md``
says where each came from and under which licence). ``WASTE_DATA_DIR`` points the tests and the bench at
another folder; the demo and the producer take a folder argument. Folders are searched recursively and
images are recognised by their extension, so any folder of photos works, however it is laid out.

Runs that need more distinct photos than a folder holds (the crash test, the bench's cache-miss sets) use the
photos turned by a quarter, a half and three quarters (:func:`distinct_photo`): to the pipeline's pHash a
turned photo is a different photo (no two of the shipped photos' rotations or mirror images are within 60
bits of each other; the near-duplicate threshold is 12).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from PIL import Image

REPO_DIR = Path(__file__).resolve().parents[1]
SAMPLES_DIR = REPO_DIR / "samples" / "waste"
# What the pipeline accepts, by extension, with the Content-Type an upload declares; other files are skipped.
# (Python's mimetypes does not know .heic, nor .avif before 3.12.)
CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
                 ".heic": "image/heic", ".heif": "image/heif", ".avif": "image/avif"}
IMAGE_SUFFIXES = frozenset(CONTENT_TYPES)
# Quarter turns clockwise; mirror images are left to the near-duplicate tests (bench.variants --mirror).
TURNS = (None, Image.Transpose.ROTATE_270, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_90)


def content_type(path: str | Path) -> str:
    """The Content-Type an upload of ``path`` declares (by extension; JPEG when unknown)."""
    return CONTENT_TYPES.get(Path(path).suffix.lower(), "image/jpeg")


def data_dir() -> Path:
    """The folder the tests and the bench read: ``WASTE_DATA_DIR`` if set, else the shipped samples."""
    return Path(os.environ.get("WASTE_DATA_DIR") or SAMPLES_DIR)


def image_files(*paths: str | Path) -> list[Path]:
    """Every image under the given folders (recursively, by extension, sorted), plus the files named directly.

    Hidden files and folders (``.git``, ``.DS_Store``...) are skipped. A path that does not exist is an error.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(
                f for f in p.rglob("*")
                if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
            ))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    return files


def sample_photos(folder: str | Path | None = None) -> list[Path]:
    """The photos under ``folder`` (default :func:`data_dir`); an empty folder is an error that says so."""
    root = Path(folder) if folder is not None else data_dir()
    files = image_files(root) if root.exists() else []
    if not files:
        raise FileNotFoundError(f"no photos under {root} (images are found by extension: "
                                f"{', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def turned(path: Path, quarter_turns: int) -> Image.Image:
    """The photo at ``path`` as RGB, turned clockwise by ``quarter_turns`` quarters (0-3)."""
    image = Image.open(path).convert("RGB")
    op = TURNS[quarter_turns % 4]
    return image if op is None else image.transpose(op)


def distinct_photo(files: list[Path], index: int) -> bytes:
    """Photo ``index`` of a list four times as long as ``files``: the files as they are, then turned.

    ``index < len(files)`` gives the file's own bytes; above that, ``files[index % n]`` turned by
    ``index // n`` quarters, as a quality-95 JPEG. Different indices give different photos to the pipeline.
    """
    n = len(files)
    if not 0 <= index < 4 * n:
        raise IndexError(f"photo {index}: {n} photos give {4 * n} distinct ones (four turns each)")
    if index < n:
        return files[index].read_bytes()
    out = io.BytesIO()
    turned(files[index % n], index // n).save(out, format="JPEG", quality=95)
    return out.getvalue()
