"""What a corpus path stands for, and its text as a stream of pieces, never the whole at once.

A corpus is a file, a folder (searched recursively), a glob, or a list of these. Each file holds
documents: a text file (``.txt``, ``.md``, ``.rst``, ``.text``, or any of them gzipped) is one
document; a ``.jsonl`` file (gzipped or not) has one JSON object per line, its text under
``text_field``; a ``.parquet`` file has one document per row, its text in the ``text_field`` column
(read one row group at a time with ``pyarrow``, the format FineWeb and nanochat ship). Documents
are joined by ``separator``. Every problem is one line naming the file and the place in it.
"""

from __future__ import annotations

import codecs
import glob
import gzip
import hashlib
import json
import os
import string
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from craft.errors import CraftError

TEXT_SUFFIXES = {".txt", ".md", ".rst", ".text"}
RECORD_SUFFIXES = {".jsonl", ".parquet"}
BUILTIN_CORPORA = ("pydoc", "stdlib")
STDLIB_SKIPPED = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
READ_BYTES = 1 << 20  # bytes read from a text file at a time


def write_builtin_corpus(name: str, path: Path) -> None:
    """Write a corpus that ships with every Python to ``path`` (only if it does not exist yet).

    ``pydoc``: the interpreter's own reference prose (what ``help("topics")`` shows), in
    English. ``stdlib``: the source of the running interpreter's standard library, every ``*.py``
    under it in sorted path order, installed packages and test folders left out (its size: README,
    "Quickstart"; which Python wrote it is ``stdlib_version()``): big enough not to overfit.
    """
    if name not in BUILTIN_CORPORA:
        raise CraftError(f"unknown built-in corpus {name!r}; available: {', '.join(BUILTIN_CORPORA)}")
    if path.exists():
        return
    if name == "pydoc":
        from pydoc_data.topics import topics

        text = "\n\n".join(topics[key].strip() for key in sorted(topics)) + "\n"
    else:
        text = "".join(f.read_text(encoding="utf-8", errors="replace").rstrip() + "\n\n" for f in stdlib_files())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def stdlib_files() -> list[Path]:
    """The standard library's ``*.py`` files, sorted by their path under it."""
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    files = [f for f in root.rglob("*.py") if not STDLIB_SKIPPED & set(f.relative_to(root).parts[:-1])]
    return sorted(files, key=lambda f: f.relative_to(root).as_posix())


def stdlib_version() -> str:
    """The interpreter whose standard library the ``stdlib`` corpus holds, e.g. ``CPython 3.11.7``."""
    import platform

    return f"{platform.python_implementation()} {platform.python_version()}"


def kind_of(file: Path) -> str | None:
    """``"text"``, ``"jsonl"`` or ``"parquet"`` for a file craft reads (``.gz`` of text or jsonl too)."""
    suffixes = [s.lower() for s in file.suffixes[-2:]]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
        if suffixes and suffixes[-1] == ".parquet":
            return None
    last = suffixes[-1] if suffixes else ""
    if last in TEXT_SUFFIXES:
        return "text"
    if last in RECORD_SUFFIXES:
        return last[1:]
    return None


def known_suffixes() -> str:
    return ", ".join([*sorted(TEXT_SUFFIXES), *sorted(RECORD_SUFFIXES), "and .gz of text or .jsonl"])


def corpus_files(paths: str | Path | list[str] | list[Path]) -> list[Path]:
    """The files a corpus stands for, in order: each entry's files sorted, entries as given.

    An entry is a file (read whatever its suffix, as text unless it is .jsonl/.parquet), a folder
    (its readable files, recursively) or a glob (``*``, ``?`` or ``[`` in it)."""
    entries = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not entries:
        raise CraftError("no corpus given: data.path is an empty list")
    files: list[Path] = []
    for entry in entries:
        text = str(entry)
        if any(c in text for c in "*?[") and not Path(text).exists():
            matched = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not matched:
                raise CraftError(f"the glob {text} matches no files; check the pattern (** needs a folder part)")
            files += matched
            continue
        path = Path(text)
        if not path.exists():
            raise CraftError(
                f"corpus not found: {path}. Put your UTF-8 text there (or pass --data.path), "
                "or try `python -m craft fit --config configs/quickstart.yaml`, which needs no download"
            )
        if path.is_file():
            files.append(path)
            continue
        found = sorted(p for p in path.rglob("*") if p.is_file() and kind_of(p) and ".craft_cache" not in p.parts)
        if not found:
            raise CraftError(f"corpus folder {path} has no files craft reads (looked for {known_suffixes()})")
        files += found
    return files


def fingerprint(files: list[Path]) -> list[list]:
    """What identifies the files without reading them: path, size, modification time."""
    out = []
    for f in files:
        st = f.stat()
        out.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
    return out


class Hasher:
    """sha256 of every byte read, fed by the readers (computed once, at preparation)."""

    def __init__(self) -> None:
        self.h = hashlib.sha256()
        self.bytes_read = 0

    def update(self, data: bytes) -> None:
        self.h.update(data)
        self.bytes_read += len(data)

    def hexdigest(self) -> str:
        return self.h.hexdigest()


class Counting:
    """A binary file wrapper that hashes what is read and counts the bytes (of the file on disk).
    ``gzip`` reads its file object through ``read`` only; other attributes (name, mode) pass through."""

    def __init__(self, raw: BinaryIO, hasher: Hasher) -> None:
        self.raw, self.hasher = raw, hasher

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.hasher.update(data)
        return data

    def readable(self) -> bool:
        return True

    def __getattr__(self, name):
        return getattr(self.raw, name)


def _open(file: Path, hasher: Hasher):
    raw = Counting(open(file, "rb"), hasher)  # noqa: SIM115 (closed by the caller)
    if file.suffix.lower() == ".gz":
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw
    return raw, raw


def _decode_error(file: Path, offset: int, e: UnicodeDecodeError) -> CraftError:
    return CraftError(
        f"{file} is not valid UTF-8 at byte offset {offset} ({e.reason}); convert it, e.g. `iconv -f latin1 -t utf-8`"
    )


def read_text(file: Path, hasher: Hasher) -> Iterator[str]:
    """A text file (or its .gz) as decoded pieces of about ``READ_BYTES``."""
    stream, raw = _open(file, hasher)
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0  # uncompressed bytes decoded so far
    try:
        first = True
        while True:
            try:
                data = stream.read(READ_BYTES)
            except (OSError, EOFError) as e:
                raise CraftError(f"{file} cannot be read at byte {offset} ({e}); is it a complete .gz?") from None
            if first and b"\x00" in data[:8192]:
                raise CraftError(f"{file} looks binary (NUL bytes near the start); the corpus must be UTF-8 text")
            first = False
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(data, final=not data)
            except UnicodeDecodeError as e:
                raise _decode_error(file, offset - pending + e.start, e) from None
            offset += len(data)
            if text:
                yield text
            if not data:
                return
    finally:
        raw.raw.close()


def lines(stream) -> Iterator[bytes]:
    """The lines of a binary stream, read in blocks."""
    rest = b""
    for block in iter(lambda: stream.read(READ_BYTES), b""):
        parts = (rest + block).split(b"\n")
        rest = parts.pop()
        yield from parts
    if rest:
        yield rest


def read_jsonl(file: Path, field: str, hasher: Hasher) -> Iterator[str]:
    """One document per line of a .jsonl file (or its .gz): the string under ``field``."""
    stream, raw = _open(file, hasher)
    try:
        for number, line in enumerate(lines(stream), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except UnicodeDecodeError as e:
                raise CraftError(f"{file} line {number} is not valid UTF-8 ({e.reason})") from None
            except json.JSONDecodeError as e:
                raise CraftError(f"{file} line {number} is not JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(record, dict) or field not in record:
                keys = ", ".join(list(record)[:8]) if isinstance(record, dict) else type(record).__name__
                raise CraftError(f"{file} line {number} has no field {field!r} (it has: {keys}); set data.text_field")
            text = record[field]
            if not isinstance(text, str):
                raise CraftError(f"{file} line {number}: field {field!r} is {type(text).__name__}, not a string")
            yield text
    except (OSError, EOFError) as e:
        raise CraftError(f"{file} cannot be read ({e}); is it a complete .gz?") from None
    finally:
        raw.raw.close()


def read_parquet(file: Path, column: str, hasher: Hasher) -> Iterator[str]:
    """One document per row of a .parquet file: the ``column`` strings, a row group at a time."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise CraftError(f"{file} is parquet: pip install pyarrow (or craft[data]) to read it") from None
    try:
        pf = pq.ParquetFile(file)
    except Exception as e:  # pyarrow raises its own ArrowInvalid / OSError family
        raise CraftError(f"{file} is not a readable parquet file ({e})") from None
    names = pf.schema_arrow.names
    if column not in names:
        raise CraftError(f"{file} has no column {column!r} (it has: {', '.join(names[:8])}); set data.text_field")
    for group in range(pf.num_row_groups):
        try:
            values = pf.read_row_group(group, columns=[column]).column(0).to_pylist()
        except Exception as e:
            raise CraftError(f"{file} row group {group} cannot be read ({e})") from None
        for row, text in enumerate(values):
            if not isinstance(text, str):
                raise CraftError(
                    f"{file} row group {group} row {row}: column {column!r} holds {type(text).__name__}, not a string"
                )
            yield text
    with open(file, "rb") as f:  # pyarrow reads the file itself: hash its bytes apart
        for block in iter(lambda: f.read(READ_BYTES), b""):
            hasher.update(block)


def text_pieces(files: list[Path], separator: str, text_field: str, hasher: Hasher) -> Iterator[str]:
    """The corpus as one text in pieces: documents in order, ``separator`` between consecutive ones."""
    first = True
    for file in files:
        kind = kind_of(file) or "text"
        if kind == "text":
            docs: Iterator[Iterator[str]] = iter([read_text(file, hasher)])
        elif kind == "jsonl":
            docs = (iter([t]) for t in read_jsonl(file, text_field, hasher))
        else:
            docs = (iter([t]) for t in read_parquet(file, text_field, hasher))
        for doc in docs:
            if not first and separator:
                yield separator
            first = False
            yield from doc


SAFE_AFTER_NEWLINE = set(string.ascii_letters + string.digits + string.punctuation)


def safe_cut(text: str) -> int:
    """The last position where the text can be cut without changing how a byte-level BPE splits it
    into words: just after a newline that is followed by a letter, digit or punctuation (the GPT-2
    pattern never joins a newline to what follows it there). 0 when there is none."""
    i = len(text) - 1
    while True:
        i = text.rfind("\n", 0, i)
        if i < 0:
            return 0
        if text[i + 1] in SAFE_AFTER_NEWLINE:
            return i + 1


def chunks(pieces: Iterator[str], size: int, anywhere: bool = False) -> Iterator[str]:
    """Regroup text pieces into chunks of at least ``size`` characters (but the last), cut only at
    ``safe_cut`` points, so encoding chunk by chunk gives the ids of encoding the whole. A text with
    no safe point stays one chunk, however long. ``anywhere``: the tokenizer does not care where a
    chunk ends, so small pieces are joined up to ``size`` and larger ones pass through uncopied."""
    buf: list[str] = []
    n = 0
    for piece in pieces:
        if anywhere:
            if buf and n + len(piece) > size:
                yield "".join(buf)
                buf, n = [], 0
            buf.append(piece)
            n += len(piece)
            continue
        buf.append(piece)
        n += len(piece)
        if n >= size:
            text = "".join(buf)
            cut = safe_cut(text)
            if cut:
                yield text[:cut]
                buf, n = [text[cut:]], len(text) - cut
            else:
                buf = [text]
    tail = "".join(buf)
    if tail:
        yield tail
