import pytest
import torch

from craft.errors import ConfigError
from craft.generation import SamplingConfig
from craft.model import GPT, GPTConfig


def expected_params(V: int, T: int, d: int, L: int, h: int) -> int:
    per_layer = (2 * d) + (3 * d * d + 3 * d) + (d * d + d) + (2 * d) + (d * h + h) + (h * d + d)
    return V * d + T * d + L * per_layer + 2 * d  # tied head adds nothing


def tiny(**kw) -> GPT:
    cfg = dict(vocab_size=20, block_size=16, d_model=32, n_layers=2, n_head=4, d_hid=64)
    cfg.update(kw)
    torch.manual_seed(0)
    return GPT(GPTConfig(**cfg)).eval()


def test_forward_shapes_and_loss():
    m = tiny()
    x = torch.randint(0, 20, (3, 16))
    logits, loss = m(x, x)
    assert logits.shape == (3, 16, 20)
    assert loss.ndim == 0 and torch.isfinite(loss)
    logits, loss = m(x)
    assert logits.shape == (3, 1, 20) and loss is None


def test_got_char_parameter_count_matches_formula():
    V = 100  # the count depends on the corpus's vocabulary; 100 characters is typical for English books
    m = GPT(GPTConfig(vocab_size=V, block_size=256, d_model=128, n_layers=6, n_head=8, d_hid=512))
    assert m.num_params() == expected_params(V, 256, 128, 6, 512) == 1_235_456
    assert m.num_params(non_embedding=True) == m.num_params() - 256 * 128


def test_invalid_config_is_one_clear_error():
    with pytest.raises(ConfigError) as e:
        GPTConfig(vocab_size=10, d_model=100, n_head=8)
    assert "d_model (100) must be divisible by n_head (8)" in str(e.value)
    with pytest.raises(ConfigError) as e:
        GPTConfig(vocab_size=10, n_layers=-1, d_hid=0)
    assert "n_layers" in str(e.value) and "d_hid" in str(e.value)


@pytest.mark.parametrize("new_tokens", [5, 40])  # 40 goes past block_size=16: the window slides
def test_kv_cache_generation_equals_uncached(new_tokens):
    m = tiny()
    prompt = torch.randint(0, 20, (2, 5))
    greedy = SamplingConfig(temperature=0)
    cached = m.generate(prompt, new_tokens, greedy, use_cache=True)
    uncached = m.generate(prompt, new_tokens, greedy, use_cache=False)
    assert cached.shape == (2, 5 + new_tokens)
    assert torch.equal(cached, uncached)


def test_kv_cache_logits_match_full_forward():
    m = tiny()
    x = torch.randint(0, 20, (1, 12))
    cache = [None] * 2
    m(x[:, :8], cache=cache)
    step_logits = []
    for t in range(8, 12):
        logits, _ = m(x[:, t : t + 1], cache=cache, start_pos=t)
        step_logits.append(logits[:, -1])
    full, _ = m(x, x)
    torch.testing.assert_close(torch.stack(step_logits, 1), full[:, 8:12], atol=1e-5, rtol=1e-5)


def test_temperature_zero_is_deterministic_and_sampling_is_seeded():
    m = tiny()
    prompt = torch.randint(0, 20, (1, 3))
    a = m.generate(prompt, 20, SamplingConfig(temperature=0))
    b = m.generate(prompt, 20, SamplingConfig(temperature=0))
    assert torch.equal(a, b)
    s = SamplingConfig(temperature=1.0, top_k=5)
    c = m.generate(prompt, 20, s, torch.Generator().manual_seed(1))
    d = m.generate(prompt, 20, s, torch.Generator().manual_seed(1))
    assert torch.equal(c, d)
