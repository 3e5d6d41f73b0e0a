"""The one sampling config, and the three samplers that follow its rule: torch (craft.generate),
numpy (craft.runtime) and the page's ONNX nodes (craft.export.draw_nodes) draw the same token
for the same logits, uniforms and settings."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto as T
from onnx import helper as h

from craft import runtime
from craft.errors import ConfigError
from craft.export import OPSET, draw_nodes
from craft.generate import filter_logits, sample_next
from craft.sampling import SamplingConfig, SamplingError, cut_at_stop

SETTINGS = [
    SamplingConfig(temperature=1.0, top_k=5),
    SamplingConfig(temperature=0.7, top_k=None, top_p=0.6),
    SamplingConfig(temperature=1.3, top_k=10, top_p=0.8),
    SamplingConfig(temperature=0.5, top_k=3, top_p=0.3),
    SamplingConfig(temperature=2.0, top_k=None),
    SamplingConfig(temperature=1e-3, top_k=None),  # near greedy: most rows keep one token
    SamplingConfig(temperature=0.0),
]


def onnx_drawer(vocab: int):
    """A session of just the page's draw nodes: (logits (1, 1, V), u, settings) -> the token."""
    nodes, inits = draw_nodes(vocab)
    tensor = h.make_tensor_value_info
    graph = h.make_graph(
        nodes,
        "draw",
        [
            tensor("logits", T.FLOAT, [1, 1, vocab]),
            tensor("uniforms", T.FLOAT, [1]),
            tensor("iteration", T.INT64, []),
            tensor("temperature", T.FLOAT, []),
            tensor("top_k", T.INT64, [1]),
            tensor("top_p", T.FLOAT, []),
        ],
        [tensor("next_ids", T.INT64, [1, 1])],
        inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    def draw(row: np.ndarray, u: float, s: SamplingConfig) -> int:
        feeds = {
            "logits": row[None, None, :].astype(np.float32),
            "uniforms": np.array([u], dtype=np.float32),
            "iteration": np.array(0, dtype=np.int64),
            "temperature": np.array(s.temperature, dtype=np.float32),
            "top_k": np.array([min(vocab, s.top_k or vocab)], dtype=np.int64),  # as the page passes it
            "top_p": np.array(s.top_p, dtype=np.float32),
        }
        return int(session.run(["next_ids"], feeds)[0][0, 0])

    return draw


@pytest.mark.parametrize("s", SETTINGS, ids=lambda s: f"t{s.temperature}-k{s.top_k}-p{s.top_p}")
def test_all_samplers_draw_the_same_tokens_for_the_same_uniforms(s):
    rows, vocab = 48, 40
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(rows, vocab, generator=g) * 3
    logits[:8, :6] = logits[:8, :1]  # rows with tied logits: ties go to the lower id everywhere
    uniforms = torch.rand(rows, 1, generator=g)  # float32, as the page feeds them
    uniforms[-1, 0] = 0.0
    torch_tokens = sample_next(logits, s, uniforms=uniforms)[:, 0].tolist()
    numpy_tokens = runtime.sample_next(logits.numpy(), s, None, uniforms=uniforms.numpy())[:, 0].tolist()
    draw = onnx_drawer(vocab)
    onnx_tokens = [draw(logits[i].numpy(), float(uniforms[i, 0]), s) for i in range(rows)]
    assert torch_tokens == numpy_tokens == onnx_tokens
    if s.greedy:
        assert torch_tokens == logits.argmax(-1).tolist()
    else:
        kept = filter_logits(logits, s)
        assert all(torch.isfinite(kept[i, t]) for i, t in enumerate(torch_tokens))  # never a dropped token
        assert len(set(torch_tokens)) > 1


@pytest.mark.parametrize("s", SETTINGS[:4], ids=lambda s: f"t{s.temperature}-k{s.top_k}-p{s.top_p}")
def test_torch_and_numpy_filters_keep_the_same_tokens(s):
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0)) * 3
    ours = runtime.filter_logits(logits.numpy(), s)
    theirs = filter_logits(logits, s).numpy()
    assert np.array_equal(np.isinf(ours), np.isinf(theirs))
    np.testing.assert_allclose(np.where(np.isinf(ours), 0, ours), np.where(np.isinf(theirs), 0, theirs), rtol=1e-6)


def test_a_uniform_at_the_top_of_the_mass_takes_the_last_kept_token():
    """Where rounding leaves the cumulative mass below ``u``, each sampler takes the last token
    with a probability, never a dropped one (nor the most likely)."""
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05, 1e-3]]))
    s, u = SamplingConfig(temperature=1.0, top_k=4), torch.tensor([[1.0 - 2**-24]])
    assert sample_next(logits, s, uniforms=u).item() == 3
    assert runtime.sample_next(logits.numpy(), s, None, uniforms=u.numpy()).item() == 3
    assert onnx_drawer(5)(logits[0].numpy(), float(u), s) == 3
    cold = SamplingConfig(temperature=1e-3, top_k=None)  # every probability but the first underflows to 0
    assert sample_next(logits, cold, uniforms=u).item() == 0


def test_draws_follow_the_filtered_distribution():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05, 1e-3]] * 4000))
    drawn = sample_next(logits, SamplingConfig(temperature=1.0, top_k=4), torch.Generator().manual_seed(0))[:, 0]
    freq = torch.bincount(drawn, minlength=5).double() / drawn.numel()
    expected = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0], dtype=torch.float64) / 0.999
    assert (freq - expected).abs().max() < 0.025  # 4,000 draws: ~3 standard errors of the largest share
    assert freq[4] == 0  # outside top-k: never drawn


def test_settings_are_checked_once_with_every_problem_named():
    with pytest.raises(SamplingError, match=r"temperature must be >= 0.*top_p must be in \(0, 1\]"):
        SamplingConfig(temperature=-1, top_p=2)
    for bad, message in [
        ({"temperature": float("nan")}, "temperature must be a finite number, got nan"),
        ({"top_p": float("inf")}, "top_p must be a finite number"),
        ({"top_k": 0}, "top_k must be >= 1 or null"),
        ({"top_k": 2.5}, "top_k must be an integer"),
        ({"max_new_tokens": True}, "max_new_tokens must be an integer, got True"),
        ({"seed": -1}, "seed must be in"),
        ({"stop": ["", "x"]}, "stop must be a list of non-empty strings"),
    ]:
        with pytest.raises(ConfigError, match=message):
            SamplingConfig(**bad)
    assert issubclass(SamplingError, ConfigError)  # craft's one-line error at the command line


def test_configs_round_trip_through_plain_values():
    s = SamplingConfig(temperature=0.5, stop=["\n\n", "THE END"])
    assert s.stop == ("\n\n", "THE END")
    assert SamplingConfig(stop="\n").stop == ("\n",)  # one string is one stop string
    assert SamplingConfig.of(s.as_dict()) == s
    assert SamplingConfig.of(None) == SamplingConfig()
    with pytest.raises(SamplingError, match=r"unknown sampling settings \['temp'\]"):
        SamplingConfig.of({"temp": 1.0})
    assert s.with_(top_k=None, seed=3) == SamplingConfig(temperature=0.5, stop=("\n\n", "THE END"), seed=3)
    assert SamplingConfig().for_vocab(65).top_k == 65 and SamplingConfig(top_k=None).for_vocab(65).top_k is None


def test_a_top_k_beyond_the_vocabulary_keeps_every_token():
    logits = torch.randn(16, 65, generator=torch.Generator().manual_seed(1))
    u = torch.rand(16, 1, generator=torch.Generator().manual_seed(2))
    wide = SamplingConfig(temperature=1.0, top_k=200).for_vocab(65)
    unlimited = replace(wide, top_k=None)
    assert torch.equal(sample_next(logits, wide, uniforms=u), sample_next(logits, unlimited, uniforms=u))


def test_text_ends_before_the_first_stop_string():
    assert cut_at_stop("the king. THE END and more", ("THE END", ".")) == ("the king", True)
    assert cut_at_stop("no stop here", ("\n",)) == ("no stop here", False)
