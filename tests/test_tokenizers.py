import json

import pytest

from craft.data.corpus import write_builtin_corpus
from craft.data.tokenizers import BPETokenizer, CharTokenizer, Tokenizer
from craft.errors import ConfigError, CraftError
from tests.helpers import make_text


def test_char_round_trip_and_state():
    text = "Winter is coming.\nÉté — ünïcödé ✓"
    tok = CharTokenizer()
    tok.fit(text)
    assert tok.vocab_size == len(set(text))
    assert tok.decode(tok.encode(text)) == text
    again = Tokenizer.from_state(tok.state())
    assert again.encode(text) == tok.encode(text)
    assert all(isinstance(c, str) for c in tok.state()["vocab"])


def test_unknown_characters_are_listed_with_positions():
    tok = CharTokenizer(vocab=list("abc "))
    with pytest.raises(CraftError) as e:
        tok.encode("ab zc!")
    msg = str(e.value)
    assert "2 character(s) outside" in msg and "'z' at 3" in msg and "'!' at 5" in msg


def test_bpe_learns_merges_and_reloads_from_its_state():
    text = make_text(20_000) + "\nÉté — ünïcödé ✓ 🎉"
    tok = BPETokenizer(vocab_size=400)
    tok.fit(text)
    assert 300 < tok.vocab_size <= 400  # 256 bytes + merges; a small corpus may stop early
    ids = tok.encode(text)
    assert len(ids) < len(text) / 2  # merges compress the text
    assert tok.decode(ids) == text
    state = tok.state()
    assert state["type"] == "bpe" and isinstance(state["trained"], str)
    again = Tokenizer.from_state(state)
    assert again.encode(text) == ids and again.decode(ids) == text
    assert again.token_char_lengths() == tok.token_char_lengths()


def test_bpe_char_lengths_sum_to_the_text_length():
    text = make_text(5_000) + " naïve 日本語 🎉 ok"
    tok = BPETokenizer(vocab_size=300)
    tok.fit(text)
    lengths = tok.token_char_lengths()
    for sample in (text, "🎉🎉", "日本", "x", "naïve café"):
        assert sum(lengths[i] for i in tok.encode(sample)) == len(sample)


def test_bpe_encodes_text_it_never_saw():
    tok = BPETokenizer(vocab_size=260)
    tok.fit("aaaa bbbb")
    text = "Zebra 🦓 ∑ \x00 tab\t"
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.slow  # trains a BPE on a large text
def test_bpe_bulk_encoding_is_tiktoken_with_the_ids_of_tokenizers(tmp_path):
    pytest.importorskip("tiktoken", reason="tiktoken (craft[data]) is the fast bulk encoder")
    write_builtin_corpus("pydoc", tmp_path / "pydoc.txt")
    text = (tmp_path / "pydoc.txt").read_text()
    tok = BPETokenizer(vocab_size=1024)
    tok.fit(text)
    assert tok._fast_encoder() is not None
    # every 7th code point (no surrogates) in the contexts the split pattern treats apart
    sweep = [chr(c) for c in range(0, 0x110000, 7) if not 0xD800 <= c < 0xE000]
    probes = ["".join(f"a{c}b {c} x1{c}2{c}{c} 's{c}\n" for c in sweep[i : i + 500]) for i in range(0, len(sweep), 500)]
    pieces = [text[i : i + 20_000] for i in range(0, len(text), 20_000)] + probes
    bulk = tok.encode_batch(pieces)
    assert [ids.tolist() for ids in bulk] == [tok.encode(p) for p in pieces]


def test_bpe_outside_the_plain_byte_level_shape_encodes_with_tokenizers():
    tok = BPETokenizer(vocab_size=300)
    tok.fit(make_text(5_000))
    spec = json.loads(tok.state()["trained"])
    spec["pre_tokenizer"]["add_prefix_space"] = True  # tiktoken's split has no prefix space
    other = BPETokenizer(trained=json.dumps(spec))
    assert other._fast_encoder() is None
    text = make_text(2_000)
    assert other.encode_batch([text])[0].tolist() == other.encode(text) != tok.encode(text)


def test_bpe_settings_are_checked():
    with pytest.raises(ConfigError, match="at least 256"):
        BPETokenizer(vocab_size=100)
    with pytest.raises(ConfigError, match="min_frequency"):
        BPETokenizer(min_frequency=0)


def test_unknown_tokenizer_type_is_a_clear_error():
    with pytest.raises(CraftError, match=r"unknown tokenizer type 'wordpiece'.*'bpe', 'char'"):
        Tokenizer.from_state({"type": "wordpiece"})
