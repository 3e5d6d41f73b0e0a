"""The Engine (craft.generate): prompts in, text out; batching, stop strings, the sampling config."""

import pytest
import torch

from craft import LanguageModel
from craft.data.tokenizers import CharTokenizer
from craft.errors import CraftError
from craft.generate import Engine, SamplingConfig, generate, sample_next

GREEDY = SamplingConfig(temperature=0, top_k=None, max_new_tokens=30)


@pytest.fixture(scope="module")
def engine() -> Engine:
    torch.manual_seed(0)
    tokenizer = CharTokenizer(list("abcdefghij .\n"))
    lm = LanguageModel(vocab_size=len(tokenizer.vocab), block_size=16, d_model=32, n_layers=2, n_head=4, d_hid=64)
    with torch.no_grad():  # an untrained model's greedy text repeats one character: spread the logits
        for p in lm.model.parameters():
            p.mul_(4)
    return Engine(lm.model.eval(), tokenizer)


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
    assert sample_next(logits, SamplingConfig(top_p=1e-6), g).item() == 0  # a tiny top_p keeps the best


def test_a_batch_of_prompts_gives_each_prompt_its_own_greedy_text(engine):
    """Prompts of equal length run as one batch (and past the 16-token window): each row's text is
    what that prompt alone gives."""
    prompts = ["abc", "bca", "jj ", "a", "hecdg", "he.ad"]
    batched = engine.generate(prompts, GREEDY)
    alone = [engine.generate([p], GREEDY)[0] for p in prompts]
    assert batched == alone
    assert all(len(t) == 30 for t in batched) and len(set(batched)) > 1
    tokenizer, model = engine.tokenizer, engine.model
    ids = torch.tensor([tokenizer.encode("abc")])
    assert batched[0] == tokenizer.decode(generate(model, ids, GREEDY)[0, 3:].tolist())  # the token loop's text


def test_generation_stops_before_the_first_stop_string(engine):
    full = engine.generate(["abc"], GREEDY)[0]
    stop = full[10:12]
    cut = engine.generate(["abc"], GREEDY.with_(stop=[stop]))[0]
    assert cut == full[: full.index(stop)] and stop not in cut
    # In a batch, a row that stops leaves the others running to their own end.
    both = engine.generate(["abc", "jj "], GREEDY.with_(stop=[stop]))
    assert both[0] == cut and both[1] == engine.generate(["jj "], GREEDY.with_(stop=[stop]))[0]


def test_seeded_sampling_repeats_and_the_seed_changes_it(engine):
    s = SamplingConfig(temperature=1.0, top_k=None, max_new_tokens=40)
    assert engine.generate(["abc"], s) == engine.generate(["abc"], s)
    assert engine.generate(["abc"], s) != engine.generate(["abc"], s.with_(seed=7))


def test_an_empty_prompt_is_refused(engine):
    with pytest.raises(CraftError, match="prompt is empty"):
        engine.generate(["abc", ""], GREEDY)
