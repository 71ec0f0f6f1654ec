"""Every Markdown document the code or the docs cite exists in the repository.

A citation is a file name ending in ``.md``, with or without a path, in a source, config or Markdown file. It
resolves against the citing file's folder, the repository root, or ``docs/`` (so "DESIGN.md section 3" in a
comment finds ``docs/DESIGN.md``). Web addresses are not citations of this repository's files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUFFIXES = {".py", ".md", ".sh", ".yml", ".yaml", ".toml", ".cfg", ".ini", ".txt", ".json", ".vcl", ".tf",
            ".tfvars", ".html", ".js", ".css"}
NAMES = {"Makefile", "Dockerfile"}
URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
CITATION = re.compile(r"(?<![\w./-])((?:\.\.?/)*\w[\w./-]*\.md)\b")


def _skipped(part: str) -> bool:
    return part.startswith(".") or part in {"__pycache__", "node_modules"} or part.endswith(".egg-info") \
        or part.startswith("stack-faust-")  # a local worker's data folder


def project_files(root: Path) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not _skipped(d))  # prune: never walk into .venv, .stack, caches
        for name in sorted(files):
            path = Path(folder) / name
            if path.suffix in SUFFIXES or name in NAMES:
                yield path


def citations(text: str) -> set[str]:
    return set(CITATION.findall(URL.sub(" ", text)))


def resolves(root: Path, citing: Path, cited: str) -> bool:
    return any((base / cited).is_file() for base in (citing.parent, root, root / "docs"))


def missing_citations(root: Path) -> dict[str, list[str]]:
    missing: dict[str, list[str]] = {}
    for path in project_files(root):
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        gone = sorted(c for c in citations(text) if not resolves(root, path, c))
        if gone:
            missing[str(path.relative_to(root))] = gone
    return missing


def test_every_cited_document_exists() -> None:
    assert missing_citations(ROOT) == {}


def test_a_citation_of_a_missing_document_is_reported(tmp_path: Path) -> None:
    def md(text: str) -> str:  # "@" stands for ".md", so this file cites nothing itself
        return text.replace("@", ".md")

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / md("NOTES@")).write_text(md("see ../README@ and GONE@; https://example.org/ELSEWHERE@\n"))
    (tmp_path / md("README@")).write_text(md("see docs/NOTES@ and NOTES@\n"))
    (tmp_path / "app.py").write_text(md("# the design (PLAN@ section 2), and docs/NOTES@\n"))
    assert missing_citations(tmp_path) == {"app.py": [md("PLAN@")], md("docs/NOTES@"): [md("GONE@")]}
