import pytest

from craft.data.tokenizers import CharTokenizer, Tokenizer
from craft.errors import CraftError


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
