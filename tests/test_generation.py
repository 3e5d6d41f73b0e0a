import pytest
import torch

from craft.errors import ConfigError
from craft.generation import SamplingConfig, sample_next


def test_top_k_only_picks_among_k_best():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]])
    g = torch.Generator().manual_seed(0)
    picks = {sample_next(logits, SamplingConfig(temperature=5.0, top_k=2), g).item() for _ in range(200)}
    assert picks == {3, 4}


def test_top_p_keeps_smallest_set_with_the_mass():
    # probabilities ~ [0.64, 0.24, 0.09, 0.03]: top_p=0.8 keeps the first two
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    g = torch.Generator().manual_seed(0)
    picks = {sample_next(logits, SamplingConfig(temperature=1.0, top_p=0.8), g).item() for _ in range(300)}
    assert picks == {0, 1}
    # a tiny top_p still keeps the most likely token
    assert sample_next(logits, SamplingConfig(top_p=1e-6), g).item() == 0


def test_greedy_is_argmax():
    logits = torch.tensor([[0.1, 5.0, 0.2], [3.0, 0.0, 0.0]])
    assert sample_next(logits, SamplingConfig(temperature=0)).flatten().tolist() == [1, 0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": -0.1}, "temperature must be >= 0"),
        ({"top_p": 0.0}, "top_p must be in (0, 1]"),
        ({"top_p": 1.5}, "top_p must be in (0, 1]"),
        ({"top_k": 0}, "top_k must be >= 1"),
    ],
)
def test_invalid_sampling_settings(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        SamplingConfig(**kwargs)


def test_top_k_larger_than_vocab_is_clamped_with_a_warning():
    with pytest.warns(UserWarning, match="top_k=500 exceeds the vocabulary"):
        s = SamplingConfig(top_k=500).for_vocab(65)
    assert s.top_k == 65
