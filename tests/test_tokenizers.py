import pytest

from craft.data.tokenizers import BPETokenizer, CharTokenizer, Tokenizer
from craft.errors import ConfigError, CraftError
from tests.conftest import make_text


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


def test_bpe_settings_are_checked():
    with pytest.raises(ConfigError, match="at least 256"):
        BPETokenizer(vocab_size=100)
    with pytest.raises(ConfigError, match="min_frequency"):
        BPETokenizer(min_frequency=0)


def test_unknown_tokenizer_type_is_a_clear_error():
    with pytest.raises(CraftError, match=r"unknown tokenizer type 'wordpiece'.*'bpe', 'char'"):
        Tokenizer.from_state({"type": "wordpiece"})
