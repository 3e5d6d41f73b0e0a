"""Corpus -> token ids on disk, in bounded memory, whatever the corpus size.

Two streaming passes over each source's text (``craft/data/corpus.py``), chunk by chunk:

1. scan: count characters, hash every byte read, and fit the tokenizer if it is not fitted yet (a
   char vocabulary from the code points seen; BPE through ``tokenizers``' iterator API, on all
   chunks or an evenly spread sample);
2. encode: split each source at its validation cut (by characters, at a line start when one is
   near, so every tokenizer validates the same text), encode chunks in batches with the
   tokenizer's bulk encoder and append the ids to ``ids.bin``.

Chunks are cut only where a byte-level BPE splits words anyway (``corpus.safe_cut``), so the ids do
not depend on the chunk size. Everything is written into a private temporary folder that is renamed
into place at the end: a crash never leaves a half-written cache. The cache is derived data:
``check`` finds a damaged one (unreadable metadata, another format, ``ids.bin`` of the wrong size)
so the data module can say so in one line and build it again.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from craft.data.corpus import Hasher, chunks, text_pieces
from craft.data.tokenizers import Tokenizer
from craft.errors import CraftError, note

CACHE_FORMAT = 3  # 3: several sources, per-source train/val ranges, key from file stats
LINE_START_WITHIN = 1000  # the validation cut moves back to a line start at most this many characters
ENCODE_BATCH = 8  # chunks handed to the bulk encoder at once


@dataclass
class Split:
    """Which characters of a source are held out, from its end: the last ``test_fraction`` as the
    test split (none by default), and before it the last ``val_chars`` if set, else
    ``val_fraction`` of them, for validation."""

    val_fraction: float = 0.1
    val_chars: int | None = None
    test_fraction: float = 0.0

    def cuts(self, chars: int) -> list[int]:
        """Where validation starts, and (with a test split) where the test split starts."""
        test = int(chars * (1 - self.test_fraction)) if self.test_fraction else chars
        if self.val_chars is not None:
            val = max(0, test - self.val_chars)
        else:
            val = int(chars * (1 - self.val_fraction - self.test_fraction))
        return [val, test] if self.test_fraction else [val]


@dataclass
class Prepared:
    """One source's files and what the scan learnt of them."""

    name: str
    files: list[Path]
    chars: int = 0
    nonblank: bool = False
    hasher: Hasher = field(default_factory=Hasher)

    @property
    def where(self) -> str:
        """The source in a message: its file, or its name and file count."""
        return str(self.files[0]) if len(self.files) == 1 else f"{self.name} ({len(self.files)} files)"


class Progress:
    """Bytes read against the files' sizes: a bar on a terminal (MB/s, ETA), nothing elsewhere."""

    def __init__(self, total: int, what: str) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=total, desc=f"craft: {what}", unit="B", unit_scale=True, file=sys.stderr, disable=None, leave=False
        )
        self.done = 0

    def to(self, done: int) -> None:
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        self.bar.close()


def source_chunks(
    source: Prepared, separator: str, text_field: str, chunk_chars: int, hasher: Hasher, anywhere: bool
) -> Iterator[str]:
    return chunks(text_pieces(source.files, separator, text_field, hasher), chunk_chars, anywhere)


PARTS = ("train", "val", "test")


def split_at(pieces: Iterator[str], cuts: list[int]) -> Iterator[tuple[str, str]]:
    """``("train", text)``, then ``("val", text)`` (then ``("test", text)``) pieces: the stream cut
    at the last line start within ``LINE_START_WITHIN`` characters before each of ``cuts`` (else at
    the cut). Only chunks near a cut are held back while it is found, so memory stays at about two
    chunks."""
    start = 0  # characters before the pending ones
    part = 0  # the part pending characters belong to
    pending: list[str] = []
    size = 0
    for chunk in pieces:
        pending.append(chunk)
        size += len(chunk)
        while part < len(cuts) and start + size >= cuts[part]:
            text = "".join(pending)
            lo = max(0, cuts[part] - LINE_START_WITHIN - start)
            newline = text.rfind("\n", lo, cuts[part] - start)
            cut = newline + 1 if newline >= 0 else cuts[part] - start
            if cut:
                yield PARTS[part], text[:cut]
            start, part = start + cut, part + 1
            pending, size = ([text[cut:]] if cut < len(text) else []), len(text) - cut
        if pending and (part == len(cuts) or start + size <= cuts[part] - LINE_START_WITHIN):
            yield PARTS[part], "".join(pending)
            start, pending, size = start + size, [], 0
    if pending:
        yield PARTS[part], "".join(pending)


def ranges(first: int, counts: dict[str, int], parts: int) -> dict[str, list[int]]:
    """Each part's ``[start, end)`` in the ids, from the source's first id: train, val (, test)."""
    out, at = {}, first
    for name in PARTS[:parts]:
        out[name] = [at, at + counts[name]]
        at += counts[name]
    return out


def write_ids(out, tokenizer: Tokenizer, batch: list[str], dtype: np.dtype, where: str = "the corpus") -> int:
    """Encode ``batch`` with the tokenizer's bulk encoder, append the ids to ``out``, empty the batch."""
    n = 0
    try:
        encoded = tokenizer.encode_batch(batch)
    except CraftError as e:  # a fitted tokenizer (a checkpoint's) meeting text it cannot encode
        raise CraftError(f"{where}: {e}") from None
    for ids in encoded:
        out.write(ids.astype(dtype, copy=False).tobytes())
        n += len(ids)
    batch.clear()
    return n


def prepare(
    folder: Path,
    sources: list[Prepared],
    tokenizer: Tokenizer,
    split: Split,
    separator: str,
    text_field: str,
    chunk_chars: int,
) -> dict:
    """Build the cache in ``folder`` (renamed into place) and return its metadata: a first pass
    counts, hashes and fits the tokenizer (``scan``), a second splits and encodes each source into
    a private temporary folder (``encode_source``)."""
    started = time.perf_counter()
    total_bytes = sum(f.stat().st_size for s in sources for f in s.files)
    reading = Reading(separator, text_field, chunk_chars, tokenizer.cuts_anywhere)
    scan(sources, tokenizer, reading, total_bytes)
    dtype = np.dtype(np.uint16 if tokenizer.vocab_size < 2**16 else np.uint32)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    progress = Progress(total_bytes, "encoding")
    described, written, read = [], 0, 0
    try:
        with open(tmp / "ids.bin", "wb") as out:
            for s in sources:
                cuts = split.cuts(s.chars)

                def shown(n: int, before: int = read) -> None:
                    progress.to(before + n)  # bytes of earlier sources, then this one's

                counts, starts_at = encode_source(out, s, tokenizer, cuts, reading, dtype, shown)
                read += s.hasher.bytes_read
                described.append(
                    {
                        "name": s.name,
                        "files": len(s.files),
                        "bytes": s.hasher.bytes_read,
                        "sha256": s.hasher.hexdigest(),
                        "chars": s.chars,
                        "val_start_char": starts_at.get("val", starts_at.get("test", s.chars)),
                        **({"test_start_char": starts_at.get("test", s.chars)} if len(cuts) > 1 else {}),
                        **ranges(written, counts, len(cuts) + 1),
                    }
                )
                written += sum(counts.values())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed preparation leaves nothing behind
        raise
    finally:
        progress.close()
    meta = {
        "format": CACHE_FORMAT,
        "dtype": dtype.name,
        "num_tokens": written,
        "tokenizer": tokenizer.state(),
        "sources": described,
        # What ``check`` compares at each start: a file rewritten after preparation (same size,
        # new time) is scanned once for ids beyond the largest one written.
        "max_id": largest_id(tmp / "ids.bin", dtype),
        "ids_mtime_ns": (tmp / "ids.bin").stat().st_mtime_ns,
        "seconds": round(time.perf_counter() - started, 2),
    }
    (tmp / "meta.json").write_text(json.dumps(meta))
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished first: its cache is identical
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - started
    mb = total_bytes / 1e6
    note(
        f"prepared {sum(len(s.files) for s in sources)} file(s), {sum(s.chars for s in sources):,} characters "
        f"-> {written:,} tokens ({tokenizer.describe()}) in {seconds:.1f} s ({mb / max(seconds, 1e-9):.1f} MB/s); "
        f"cache: {folder}"
    )
    return meta


@dataclass
class Reading:
    """How a source's files become chunks of text (the same in both passes)."""

    separator: str
    text_field: str
    chunk_chars: int
    anywhere: bool  # the tokenizer's cuts_anywhere

    def chunks(self, source: Prepared, hasher: Hasher) -> Iterator[str]:
        return source_chunks(source, self.separator, self.text_field, self.chunk_chars, hasher, self.anywhere)


def scan(sources: list[Prepared], tokenizer: Tokenizer, reading: Reading, total_bytes: int) -> None:
    """Pass 1: count each source's characters, hash its bytes and fit the tokenizer (if it is not
    fitted yet) in one read; refuse a source with no text."""
    progress = Progress(total_bytes, "scanning")

    def scanned() -> Iterator[str]:
        read = 0
        for s in sources:
            for chunk in reading.chunks(s, s.hasher):
                s.chars += len(chunk)
                s.nonblank = s.nonblank or not chunk.isspace()
                progress.to(read + s.hasher.bytes_read)
                yield chunk
            read += s.hasher.bytes_read

    try:
        if tokenizer.is_fitted:
            for _ in scanned():
                pass
        else:
            tokenizer.fit_stream(scanned(), total_bytes)
    finally:
        progress.close()
    for s in sources:
        if not s.nonblank:
            raise CraftError(f"corpus {s.where} is empty")


def encode_source(
    out, source: Prepared, tokenizer: Tokenizer, cuts: list[int], reading: Reading, dtype: np.dtype, progress
) -> tuple[dict[str, int], dict[str, int]]:
    """Pass 2 for one source: its train, val (and test) text encoded apart and appended to ``out``.
    Returns the ids written per part and the first character of each held-out part; refuses a
    source whose bytes changed since ``scan`` hashed them."""
    counts = dict.fromkeys(PARTS, 0)
    starts_at: dict[str, int] = {}
    chars, hasher, batch, part = 0, Hasher(), [], "train"
    where = f"corpus {source.where}"
    for kind, text in split_at(reading.chunks(source, hasher), cuts):
        if kind != part:
            counts[part] += write_ids(out, tokenizer, batch, dtype, where)
            part, starts_at[kind] = kind, chars
        batch.append(text)
        chars += len(text)
        if len(batch) >= ENCODE_BATCH:
            counts[part] += write_ids(out, tokenizer, batch, dtype, where)
        progress(hasher.bytes_read)
    counts[part] += write_ids(out, tokenizer, batch, dtype, where)
    if hasher.hexdigest() != source.hasher.hexdigest():
        raise CraftError(f"the corpus {source.name} changed while it was being prepared; start again")
    return counts, starts_at


def check(folder: Path) -> str | None:
    """What is wrong with a cache folder that exists, or None when it is sound."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except FileNotFoundError:
        return "meta.json is missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"meta.json is not readable ({e.__class__.__name__})"
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        return f"meta.json has format {found!r}, this craft writes {CACHE_FORMAT}"
    sources = meta.get("sources")
    try:
        expected = int(meta["num_tokens"]) * np.dtype(meta["dtype"]).itemsize
    except (KeyError, TypeError, ValueError):
        expected = None
    records = isinstance(sources, list) and sources and all(isinstance(s, dict) and "train" in s for s in sources)
    if expected is None or "tokenizer" not in meta or not records:
        return "meta.json lacks the fields craft reads"
    ids = folder / "ids.bin"
    size = ids.stat().st_size if ids.is_file() else None
    if size != expected:
        return f"ids.bin has {size if size is not None else 'no'} bytes, meta.json says {expected}"
    if "ids_mtime_ns" in meta and ids.stat().st_mtime_ns != meta["ids_mtime_ns"]:  # written since: look inside
        found = largest_id(ids, np.dtype(meta["dtype"]))
        if found > meta["max_id"]:
            return f"ids.bin was changed after preparation: it holds id {found}, the largest written {meta['max_id']}"
    return None


def largest_id(path: Path, dtype: np.dtype, block: int = 1 << 24) -> int:
    """The largest id in an ids file, read a block at a time (memory stays at one block)."""
    ids = np.memmap(path, dtype=dtype, mode="r")
    return max((int(ids[i : i + block].max()) for i in range(0, len(ids), block)), default=-1)
