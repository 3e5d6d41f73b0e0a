"""Reading and validating the training text, and the built-in quickstart corpus."""

from __future__ import annotations

import os
from pathlib import Path

from craft.errors import CraftError

TEXT_SUFFIXES = {".txt", ".md", ".rst", ".text"}
BUILTIN_CORPORA = ("pydoc",)


def write_builtin_corpus(name: str, path: Path) -> None:
    """Write a corpus that ships with every Python to ``path`` (only if it does not exist yet)."""
    if name != "pydoc":
        raise CraftError(f"unknown built-in corpus {name!r}; available: {', '.join(BUILTIN_CORPORA)}")
    if path.exists():
        return
    # The interpreter's own reference prose (what `help("topics")` shows): ~465 KB of English.
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[key].strip() for key in sorted(topics)) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def corpus_files(path: Path) -> list[Path]:
    """The text files a corpus path stands for: the file itself, or a folder's text files, sorted."""
    if not path.exists():
        raise CraftError(
            f"corpus not found: {path}. Put your UTF-8 text there (or pass --data.path), "
            "or try `python -m craft fit --config configs/quickstart.yaml`, which needs no download"
        )
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
    if not files:
        raise CraftError(f"corpus folder {path} has no text files (looked for {', '.join(sorted(TEXT_SUFFIXES))})")
    return files


def read_corpus(path: Path) -> str:
    """Read and validate UTF-8 text; every problem is reported with the file (and byte offset)."""
    parts = []
    for file in corpus_files(path):
        data = file.read_bytes()
        if b"\x00" in data[:8192]:
            raise CraftError(f"{file} looks binary (NUL bytes near the start); the corpus must be UTF-8 text")
        try:
            parts.append(data.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise CraftError(
                f"{file} is not valid UTF-8 at byte offset {e.start} ({e.reason}); "
                "convert it, e.g. `iconv -f latin1 -t utf-8`"
            ) from None
    text = "\n".join(parts)
    if not text.strip():
        raise CraftError(f"corpus {path} is empty")
    return text
