"""Property tests (hypothesis): tokenizer, window sampler, sampling parameters."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from craft.data.tokenizers import BPETokenizer, CharTokenizer, Tokenizer
from craft.data.windows import WindowBatchSampler
from craft.generate import SamplingConfig, generate, sample_next
from craft.model import GPT, GPTConfig


@given(st.text(min_size=1, max_size=300))
def test_char_tokenizer_round_trips_any_text(text):
    tok = CharTokenizer()
    tok.fit(text)
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert Tokenizer.from_state(tok.state()).encode(text) == ids


BPE = BPETokenizer(vocab_size=300)
BPE.fit("The quick brown fox jumps over the lazy dog. " * 50 + "naïve café 日本語 🎉")
BPE_RELOADED = Tokenizer.from_state(BPE.state())


@given(st.text(max_size=300))
def test_bpe_round_trips_any_text_and_counts_its_characters(text):
    ids = BPE.encode(text)
    assert BPE.decode(ids) == text
    assert BPE_RELOADED.encode(text) == ids
    lengths = BPE.token_char_lengths()
    assert sum(lengths[i] for i in ids) == len(text)


@given(st.lists(st.text(max_size=200), min_size=1, max_size=4))
def test_bpe_bulk_encoder_gives_the_ids_of_encode(texts):
    assert [ids.tolist() for ids in BPE.encode_batch(texts)] == [BPE.encode(t) for t in texts]


@given(st.data())
def test_char_tokenizer_round_trips_text_drawn_from_its_vocab(data):
    vocab = data.draw(st.lists(st.characters(), min_size=1, max_size=50, unique=True))
    tok = CharTokenizer(vocab=vocab)
    text = data.draw(st.text(alphabet=st.sampled_from(vocab), max_size=200))
    assert tok.decode(tok.encode(text)) == text


@given(
    num_starts=st.integers(1, 5000),
    batch_size=st.integers(1, 16),
    batches=st.integers(1, 20),
    seed=st.integers(0, 2**31),
    consumed=st.integers(0, 100),
)
@settings(max_examples=60, deadline=None)
def test_window_sampler_in_range_deterministic_and_resumable(num_starts, batch_size, batches, seed, consumed):
    sampler = WindowBatchSampler(num_starts, batch_size, batches, seed, progress=lambda: consumed)
    got = list(sampler)
    epoch, first = divmod(consumed, batches)
    assert len(got) == batches - first
    for i, batch in enumerate(got):
        assert len(batch) == batch_size and all(0 <= s < num_starts for s in batch)
        assert batch == WindowBatchSampler(num_starts, batch_size, batches, seed).batch(epoch, first + i)
    assert got == list(WindowBatchSampler(num_starts, batch_size, batches, seed, progress=lambda: consumed))


MODEL = GPT(GPTConfig(vocab_size=11, block_size=8, d_model=16, n_layers=1, n_head=2, d_hid=32)).eval()


@given(
    temperature=st.floats(0, 5),
    top_k=st.one_of(st.none(), st.integers(1, 30)),
    top_p=st.floats(1e-6, 1.0),
    new_tokens=st.integers(1, 20),
)
@settings(max_examples=60, deadline=None)
def test_no_valid_sampling_settings_crash(temperature, top_k, top_p, new_tokens):
    sampling = (
        SamplingConfig(temperature, top_k, top_p, new_tokens).for_vocab(11)
        if top_k and top_k > 11
        else SamplingConfig(temperature, top_k, top_p, new_tokens)
    )
    out = generate(MODEL, torch.tensor([[1, 2]]), sampling, torch.Generator().manual_seed(0))
    assert out.shape == (1, 2 + new_tokens) and int(out.min()) >= 0 and int(out.max()) < 11
    logits = torch.randn(3, 11)
    picks = sample_next(logits, sampling, torch.Generator().manual_seed(1))
    assert picks.shape == (3, 1)
