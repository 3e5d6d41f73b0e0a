import os
import platform
from pathlib import Path

import numpy as np
import pytest
import torch

from craft.data import TextDataModule
from craft.data.tokenizers import BPETokenizer
from craft.data.windows import WindowBatchSampler
from craft.errors import ConfigError, CraftError


@pytest.mark.parametrize("tokenizer", [None, BPETokenizer(300)], ids=["char", "bpe"])
def test_split_is_contiguous_without_overlap(corpus, tokenizer):
    dm = TextDataModule(str(corpus), block_size=16, batch_size=4, val_fraction=0.1, tokenizer=tokenizer)
    dm.setup("fit")
    text = corpus.read_text()
    train, val = dm.tokenizer.decode(dm.train_ids.tolist()), dm.tokenizer.decode(dm.val_ids.tolist())
    assert train + val == text
    # Split by characters, at a line start: every tokenizer validates on the same text.
    assert val.startswith(text[text.rfind("\n", 0, int(len(text) * 0.9)) + 1 :][:50])
    assert 0.09 < len(val) / len(text) < 0.11
    # every training window lies entirely inside the train split
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == y.shape == (4, 16)
    assert torch.equal(x[:, 1:], y[:, :-1])
    loader = dm.train_dataloader()
    max_start = max(s for batch in loader.batch_sampler for s in batch)
    assert max_start + 16 + 1 <= len(dm.train_ids)


def test_validation_windows_cover_the_split_once(corpus):
    dm = TextDataModule(str(corpus), block_size=16, batch_size=4)
    dm.setup("fit")
    starts = [s for batch in dm.val_dataloader().batch_sampler for s in batch]
    assert starts == list(range(0, len(dm.val_ids) - 16, 16))


def test_sampler_is_a_pure_function_of_seed_epoch_index():
    a = WindowBatchSampler(1000, 8, 10, seed=3)
    b = WindowBatchSampler(1000, 8, 10, seed=3)
    assert list(a) == list(b)
    assert a.batch(2, 4) == b.batch(2, 4)
    assert a.batch(0, 0) != a.batch(1, 0)
    assert list(WindowBatchSampler(1000, 8, 10, seed=4)) != list(a)


def test_sampler_resumes_where_progress_says():
    full = WindowBatchSampler(1000, 8, 10, seed=3)
    epoch1 = [full.batch(1, i) for i in range(10)]
    for consumed in (0, 3, 9):
        resumed = WindowBatchSampler(1000, 8, 10, seed=3, progress=lambda c=consumed: 10 + c)
        assert list(resumed) == epoch1[consumed:]


def test_ranks_take_disjoint_slices_of_the_global_batch():
    r0 = WindowBatchSampler(1000, 4, 5, seed=1, rank=0, world_size=2)
    r1 = WindowBatchSampler(1000, 4, 5, seed=1, rank=1, world_size=2)
    g = r0.epoch_starts(0)
    assert r0.batch(0, 2) + r1.batch(0, 2) == g[2].tolist()


def test_cache_is_reused_and_keyed_by_content(corpus):
    dm = TextDataModule(str(corpus), block_size=16)
    folder = dm.cache_folder()
    assert dm.prepare_vocab() > 0 and (folder / "ids.bin").exists()
    mtime = (folder / "ids.bin").stat().st_mtime_ns
    assert TextDataModule(str(corpus), block_size=16).prepare_vocab() == dm.vocab_size
    assert (folder / "ids.bin").stat().st_mtime_ns == mtime
    corpus.write_text(corpus.read_text() + "new text!")
    assert TextDataModule(str(corpus), block_size=16).cache_folder() != folder


def test_builtin_corpus_is_written_once(tmp_path):
    path = tmp_path / "pydoc.txt"
    dm = TextDataModule(str(path), builtin_corpus="pydoc", block_size=64)
    assert dm.source_names == ["pydoc"] and not path.exists()  # asking its names writes nothing
    with pytest.raises(CraftError, match="call prepare_vocab"):
        _ = dm.vocab_size  # nor does a property prepare anything
    assert dm.prepare_vocab() > 50
    assert path.stat().st_size > 400_000


def test_stdlib_corpus_is_the_standard_librarys_source_in_sorted_order(tmp_path):
    """Every *.py of the running interpreter's stdlib, sorted by path, installed packages and test
    folders left out; written the same twice (a corpus a result can name by Python version)."""
    import sysconfig

    from craft.data.corpus import stdlib_files, stdlib_version, write_builtin_corpus

    root = Path(sysconfig.get_paths()["stdlib"])
    files = stdlib_files()
    relative = [f.relative_to(root).as_posix() for f in files]
    assert relative == sorted(relative) and "os.py" in relative and "json/decoder.py" in relative
    assert not [r for r in relative if {"site-packages", "test", "tests"} & set(r.split("/")[:-1])]
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    write_builtin_corpus("stdlib", a)
    write_builtin_corpus("stdlib", b)
    assert a.read_bytes() == b.read_bytes() and a.stat().st_size > 5_000_000
    text = a.read_text(encoding="utf-8")
    assert text.index((root / "abc.py").read_text(encoding="utf-8").strip()) < text.index("class JSONDecoder")
    assert stdlib_version().split()[1] == platform.python_version()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"val_fraction": 0.0}, "val_fraction must be in (0, 1)"),
        ({"val_fraction": 1.0}, "val_fraction must be in (0, 1)"),
        ({"block_size": -4}, "block_size must be positive"),
        ({"batch_size": 0}, "batch_size must be positive"),
    ],
)
def test_invalid_data_config(corpus, kwargs, message):
    with pytest.raises(ConfigError) as e:
        TextDataModule(str(corpus), **kwargs)
    assert message in str(e.value)


def test_corpus_errors(tmp_path):
    with pytest.raises(CraftError, match="corpus not found"):
        _ = TextDataModule(str(tmp_path / "missing.txt")).prepare_vocab()
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(CraftError, match="is empty"):
        _ = TextDataModule(str(empty)).prepare_vocab()
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(CraftError, match="not valid UTF-8 at byte offset 3"):
        _ = TextDataModule(str(bad)).prepare_vocab()
    short = tmp_path / "short.txt"
    short.write_text("x" * 100)
    dm = TextDataModule(str(short), block_size=64)
    with pytest.raises(CraftError, match="needs at least 65"):
        dm.setup("fit")
    assert np.all(np.asarray(dm._ids) == 0)


def test_held_out_parts_start_at_line_starts_before_each_cut():
    """``split_at`` with a test split: train, val and test in order, joined back to the text, each
    held-out part starting at the last line start within reach before its cut, for any chunking."""
    from craft.data.prepare import LINE_START_WITHIN, split_at

    text = "".join(f"line {i} " + "x" * (i % 97) + "\n" for i in range(3000))
    cuts = [int(len(text) * 0.8), int(len(text) * 0.9)]
    for size in (1, 7, 500, 4096, len(text)):
        pieces = list(split_at(iter([text[i : i + size] for i in range(0, len(text), size)]), cuts))
        parts = {k: "".join(t for kind, t in pieces if kind == k) for k in ("train", "val", "test")}
        assert [k for k, _ in pieces] == sorted((k for k, _ in pieces), key=["train", "val", "test"].index)
        assert parts["train"] + parts["val"] + parts["test"] == text
        for name, cut in zip(("val", "test"), cuts, strict=True):
            start = len(parts["train"]) if name == "val" else len(parts["train"]) + len(parts["val"])
            assert start == text.rfind("\n", cut - LINE_START_WITHIN, cut) + 1, (size, name)


def test_a_cache_rewritten_in_place_is_found_and_prepared_again(corpus):
    """ids.bin overwritten at its own size (all bytes 0xFF): caught when the cache is opened,
    with a warning, and prepared again to the same ids; a file only touched is kept as it is."""
    from craft.errors import CraftWarning

    dm = TextDataModule(str(corpus), block_size=16)
    folder = dm.cache_folder()  # named before the tokenizer is fitted, as every start names it
    dm.setup("fit")
    ids = dm._ids.copy()
    (folder / "ids.bin").write_bytes(b"\xff" * len(ids) * ids.dtype.itemsize)
    with pytest.warns(CraftWarning, match="ids.bin was changed after preparation: it holds id 65535"):
        again = TextDataModule(str(corpus), block_size=16)
        again.setup("fit")
    assert np.array_equal(again._ids, ids)
    os.utime(folder / "ids.bin")  # a new time, the same ids: scanned, found sound, kept
    before = (folder / "meta.json").read_text()
    kept = TextDataModule(str(corpus), block_size=16)
    kept.setup("fit")
    assert np.array_equal(kept._ids, ids) and (folder / "meta.json").read_text() == before
