"""Corpora of any size: inputs and formats, streaming preparation, the cache, mixtures."""

import gzip
import json
import math
import os

import numpy as np
import pytest
import torch

from craft.cli import main
from craft.data import TextDataModule, corpus
from craft.data.datamodule import Source
from craft.data.tokenizers import BPETokenizer
from craft.data.windows import WindowBatchSampler
from craft.errors import CraftError, CraftWarning
from tests.helpers import make_text, scalars, tiny_args

DOCS = [make_text(3_000, seed=i) + "ünï" * i for i in range(5)]


def ids_of(path, **kwargs) -> tuple[np.ndarray, list | str]:
    dm = TextDataModule(path if isinstance(path, list) else str(path), block_size=16, **kwargs)
    dm.setup("fit")
    return np.asarray(dm._ids).copy(), dm.tokenizer.state()


@pytest.fixture
def plain(tmp_path):
    path = tmp_path / "plain" / "all.txt"
    path.parent.mkdir()
    path.write_text("\n".join(DOCS), encoding="utf-8")
    return path


@pytest.mark.parametrize("tokenizer", [None, "bpe"])
def test_every_input_form_gives_the_ids_of_the_plain_text(tmp_path, plain, tokenizer):
    make = (lambda: BPETokenizer(300)) if tokenizer else (lambda: None)
    expected, state = ids_of(plain, tokenizer=make())

    folder = tmp_path / "folder" / "sub"
    folder.mkdir(parents=True)
    for i, doc in enumerate(DOCS):
        (folder / f"d{i}.txt").write_text(doc, encoding="utf-8")
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"id": i, "body": d}) + "\n" for i, d in enumerate(DOCS)), encoding="utf-8")
    jsonl_gz = tmp_path / "docs.jsonl.gz"
    jsonl_gz.write_bytes(gzip.compress(jsonl.read_bytes()))
    text_gz = tmp_path / "all.txt.gz"
    text_gz.write_bytes(gzip.compress(plain.read_bytes()))
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"id": list(range(5)), "body": DOCS}), parquet, row_group_size=2)
    assert pq.ParquetFile(parquet).num_row_groups == 3

    forms = {
        "folder": tmp_path / "folder",
        "glob": str(folder / "d*.txt"),
        "list": [str(folder / f"d{i}.txt") for i in range(5)],
        "gz": text_gz,
        "jsonl": jsonl,
        "jsonl.gz": jsonl_gz,
        "parquet": parquet,
    }
    for name, form in forms.items():
        got, got_state = ids_of(form, tokenizer=make(), text_field="body")
        assert np.array_equal(got, expected), name
        assert got_state == state, name


@pytest.mark.parametrize("tokenizer", [None, "bpe"])
def test_small_chunks_prepare_the_ids_of_one_chunk(plain, tmp_path, capsys, monkeypatch, tokenizer):
    make = (lambda: BPETokenizer(300)) if tokenizer else (lambda: None)
    whole, state = ids_of(plain, tokenizer=make(), chunk_chars=10**9, cache_dir=str(tmp_path / "a"))
    capsys.readouterr()
    monkeypatch.setattr(corpus, "READ_BYTES", 997)  # reads end inside multi-byte characters too
    pieces = list(corpus.chunks(corpus.text_pieces([plain], "", "text", corpus.Hasher()), 200, not tokenizer))
    assert len(pieces) > 10 and "".join(pieces) == plain.read_text(encoding="utf-8")
    chunked, chunked_state = ids_of(plain, tokenizer=make(), chunk_chars=200, cache_dir=str(tmp_path / "b"))
    assert np.array_equal(whole, chunked) and state == chunked_state
    err = capsys.readouterr().err
    assert "prepared 1 file(s), 15,0" in err and "cache:" in err and "MB/s" in err


def test_val_chars_holds_out_that_many_characters_at_a_line_start(plain):
    dm = TextDataModule(str(plain), block_size=16, val_chars=2_000)
    dm.setup("fit")
    val = dm.tokenizer.decode(dm.val_ids.tolist())
    assert 2_000 <= len(val) < 3_000 and val[0].isupper()  # moved back to a line start
    text = plain.read_text(encoding="utf-8")
    assert dm.tokenizer.decode(dm.train_ids.tolist()) + val == text


def test_the_cache_is_found_without_reading_and_a_changed_file_is_detected(plain, monkeypatch):
    dm = TextDataModule(str(plain), block_size=16)
    folder = dm.cache_folder()
    dm.setup("fit")
    meta = json.loads((folder / "meta.json").read_text())
    assert len(meta["sources"][0]["sha256"]) == 64
    # The lookup reads no corpus byte: a second module finds the cache with file reads forbidden.
    import craft.data.corpus as corpus_module

    def forbidden(*args, **kwargs):
        raise AssertionError("the corpus was read")

    monkeypatch.setattr(corpus_module, "read_text", forbidden)
    again = TextDataModule(str(plain), block_size=16)
    assert again.cache_folder() == folder
    again.setup("fit")
    assert np.array_equal(np.asarray(again._ids), np.asarray(dm._ids))
    monkeypatch.undo()
    plain.write_text(plain.read_text(encoding="utf-8").replace("king", "kong"), encoding="utf-8")  # same size
    os.utime(plain, ns=(1, 1))
    changed = TextDataModule(str(plain), block_size=16)
    assert changed.cache_folder() != folder
    changed.setup("fit")
    assert "kong" in changed.tokenizer.decode(changed.train_ids[:2000].tolist())


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda f: f.joinpath("ids.bin").write_bytes(f.joinpath("ids.bin").read_bytes()[:100]), "ids.bin has 100 "),
        (lambda f: f.joinpath("ids.bin").unlink(), "ids.bin has no bytes"),
        (lambda f: f.joinpath("meta.json").write_text('{"format": 3, "dty'), "meta.json is not readable"),
        (lambda f: f.joinpath("meta.json").write_text('{"format": 2}'), "meta.json has format 2"),
        (lambda f: f.joinpath("meta.json").unlink(), "meta.json is missing"),
    ],
    ids=["truncated", "ids-missing", "corrupt-meta", "old-format", "meta-missing"],
)
def test_a_damaged_cache_is_rebuilt_with_a_warning(plain, damage, reason):
    expected, _ = ids_of(plain)
    folder = TextDataModule(str(plain)).cache_folder()
    damage(folder)
    dm = TextDataModule(str(plain), block_size=16)
    with pytest.warns(CraftWarning, match=f"prepared corpus at .* is damaged \\({reason}.*preparing it again"):
        dm.setup("fit")
    assert np.array_equal(np.asarray(dm._ids), expected)


def test_bad_inputs_name_the_file_and_place(tmp_path):
    def error(path, **kwargs) -> str:
        with pytest.raises(CraftError) as e:
            _ = TextDataModule(str(path), **kwargs).prepare_vocab()
        assert "\n" not in str(e.value)
        return str(e.value)

    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "a"}\n{"text": "b"\n')
    assert error(bad_json) == f"{bad_json} line 2 is not JSON (Expecting ',' delimiter at column 13)"
    no_field = tmp_path / "nofield.jsonl"
    no_field.write_text('{"text": "a"}\n\n{"body": "b"}\n')
    assert error(no_field).startswith(f"{no_field} line 3 has no field 'text' (it has: body)")
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = tmp_path / "t.parquet"
    pq.write_table(pa.table({"content": ["x"]}), parquet)
    assert error(parquet).startswith(f"{parquet} has no column 'text' (it has: content)")
    assert error(tmp_path / "none" / "*.txt").startswith(f"the glob {tmp_path}/none/*.txt matches no files")
    latin = tmp_path / "late.txt.gz"
    latin.write_bytes(gzip.compress(b"x" * 5000 + "caf\xe9!".encode("latin-1")))
    assert error(latin).startswith(f"{latin} is not valid UTF-8 at byte offset 5003")
    truncated = tmp_path / "cut.txt.gz"
    truncated.write_bytes(gzip.compress(b"abc\n" * 1000)[:40])
    assert "is it a complete .gz?" in error(truncated)
    with pytest.raises(CraftError, match="give data.path or data.sources, not both"):
        TextDataModule(str(bad_json), sources=[Source(str(bad_json))])


def test_mixture_windows_follow_the_weights():
    sampler = WindowBatchSampler([1000, 3000], 64, 20, seed=5, offsets=[0, 10_000], weights=[0.8, 0.2])
    starts = torch.tensor([s for batch in sampler for s in batch])
    n = starts.numel()
    second = int((starts >= 10_000).sum())
    assert abs(second - 0.2 * n) < 4 * math.sqrt(n * 0.2 * 0.8)  # within 4 sigma of the binomial
    assert bool(((starts < 1000) | ((starts >= 10_000) & (starts < 13_000))).all())
    again = WindowBatchSampler([1000, 3000], 64, 20, seed=5, offsets=[0, 10_000], weights=[0.8, 0.2])
    assert list(sampler) == list(again)


@pytest.mark.slow
def test_a_mixture_trains_resumes_bitwise_and_reports_each_source(tmp_path):
    a, b = tmp_path / "kings.txt", tmp_path / "queens.jsonl"
    a.write_text(make_text(30_000, seed=1), encoding="utf-8")
    b.write_text("".join(json.dumps({"text": make_text(1_000, seed=10 + i)}) + "\n" for i in range(20)))
    sources = json.dumps([{"path": str(a), "weight": 3}, {"path": str(b), "weight": 1, "name": "q"}])
    extra = ["--data.path", "null", "--data.sources", sources, "--trainer.max_steps", "12"]
    extra += ["--trainer.limit_val_batches", "4"]
    full, split = tmp_path / "full", tmp_path / "split"
    main(["fit", *tiny_args(a, full), *extra])
    stop = '{"class_path": "tests.helpers.StopAtStep", "init_args": {"step": 7}}'
    main(["fit", *tiny_args(a, split), *extra, "--trainer.callbacks+", stop])
    main(["fit", *tiny_args(a, split), *extra, "--ckpt_path", "last"])
    loss_a, loss_b = scalars(full / "tiny", "train/loss_step"), scalars(split / "tiny", "train/loss_step")
    assert sorted(loss_a) == list(range(12)) and loss_a == loss_b
    wa = torch.load(full / "tiny" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    wb = torch.load(split / "tiny" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    for tag in ("val/bpc", "val/bpc/kings", "val/bpc/q", "val/loss/kings", "val/loss/q"):
        values = scalars(full / "tiny", tag)
        assert sorted(values) == [4, 9] and all(0 < v < 10 for v in values.values()), tag
    mix, kings, q = (scalars(full / "tiny", f"val/bpc{s}") for s in ("", "/kings", "/q"))
    for step in mix:  # over all validated characters: between the two sources' figures
        assert min(kings[step], q[step]) < mix[step] < max(kings[step], q[step])
