import pytest
import torch
import torch.nn.functional as F

from craft.errors import ConfigError
from craft.generate import SamplingConfig, generate
from craft.model import GPT, GPTConfig
from craft.model.cache import KVCache
from tests.helpers import ALL_COMPONENTS, COMPONENTS, perturbed


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


VARIANTS = [
    {},
    {"norm": "rmsnorm", "mlp": "swiglu", "positions": "rotary"},
    {"positions": "rotary"},
    {"mlp": "relu2"},
    {"norm": "rmsnorm_free", "positions": "rotary"},
    *COMPONENTS,
    ALL_COMPONENTS,
]


def variant_id(v) -> str:
    if not isinstance(v, dict):
        return str(v)
    return "-".join(f"{k}={val}" for k, val in v.items()) or "classic"


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
@pytest.mark.parametrize("new_tokens", [5, 40])  # 40 goes past block_size=16: the window slides
def test_kv_cache_generation_equals_uncached(new_tokens, variant):
    m = perturbed(tiny(**variant))
    prompt = torch.randint(0, 20, (2, 5))
    greedy = SamplingConfig(temperature=0, max_new_tokens=new_tokens)
    cached = generate(m, prompt, greedy, use_cache=True)
    uncached = generate(m, prompt, greedy, use_cache=False)
    assert cached.shape == (2, 5 + new_tokens)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_kv_cache_logits_match_full_forward(variant):
    m = perturbed(tiny(**variant))
    x = torch.randint(0, 20, (1, 12))
    cache = KVCache.empty(m.config, 1)
    m(x[:, :8], cache=cache)  # prefill, positions 0..7
    step_logits = []
    for t in range(8, 12):
        logits, _ = m(x[:, t : t + 1], cache=cache, input_pos=torch.tensor([t]))
        step_logits.append(logits[:, -1])
    full, _ = m(x, x)
    torch.testing.assert_close(torch.stack(step_logits, 1), full[:, 8:12], atol=1e-5, rtol=1e-5)


def test_temperature_zero_is_deterministic_and_sampling_is_seeded():
    m = tiny()
    prompt = torch.randint(0, 20, (1, 3))
    greedy = SamplingConfig(temperature=0, max_new_tokens=20)
    assert torch.equal(generate(m, prompt, greedy), generate(m, prompt, greedy))
    s = SamplingConfig(temperature=1.0, top_k=5, max_new_tokens=20)
    c = generate(m, prompt, s, torch.Generator().manual_seed(1))
    d = generate(m, prompt, s, torch.Generator().manual_seed(1))
    assert torch.equal(c, d)
    assert not torch.equal(c, generate(m, prompt, s, torch.Generator().manual_seed(2)))


def test_modern_variant_uses_its_parts_at_a_comparable_parameter_count():
    shape = dict(vocab_size=100, block_size=256, d_model=128, n_layers=6, n_head=8, d_hid=512)
    classic = GPT(GPTConfig(**shape))
    modern = GPT(GPTConfig(**shape, norm="rmsnorm", mlp="swiglu", positions="rotary"))
    kinds = {type(m).__name__ for m in modern.modules()}
    assert {"RMSNorm", "SwiGLU", "RotaryPositions"} <= kinds and "LayerNorm" not in kinds
    # SwiGLU width 344 = 2/3 of 512 rounded up to 8: 3 * 128 * 344 weights vs GELU's 2 * 128 * 512.
    assert modern.blocks[0].mlp.proj.in_features == 344
    # Rotary has no parameters (no 256 x 128 table); RMSNorm has no bias.
    assert modern.num_params(non_embedding=True) == modern.num_params()
    ratio = modern.num_params(non_embedding=True) / classic.num_params(non_embedding=True)
    assert 0.98 < ratio < 1.02, ratio


def test_rotary_scores_depend_only_on_relative_position():
    rot = tiny(positions="rotary").positions
    q, k = torch.randn(1, 4, 5, 8), torch.randn(1, 4, 5, 8)  # (B, nh, T, hs)
    q0, k0 = rot.rotate(q, k, 0)
    q7, k7 = rot.rotate(q, k, 7)
    assert not torch.allclose(q0, q7)  # each vector turns with its position...
    torch.testing.assert_close(q0 @ k0.transpose(-1, -2), q7 @ k7.transpose(-1, -2))  # ...scores do not


class ScaledTanhNorm(torch.nn.Module):
    """A norm from outside craft's registry, named in a config by its import path."""

    def __init__(self, d_model: int, bias: bool = True) -> None:
        super().__init__()
        self.alpha = torch.nn.Parameter(torch.ones(1))
        self.weight = torch.nn.Parameter(torch.ones(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.alpha * x) * self.weight


def test_a_new_variant_is_named_by_import_path():
    m = tiny(norm="tests.test_model.ScaledTanhNorm")
    assert type(m.blocks[0].ln_1).__name__ == "ScaledTanhNorm"
    x = torch.randint(0, 20, (2, 16))
    _, loss = m(x, x)
    loss.backward()
    assert m.blocks[0].ln_1.alpha.grad is not None


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("norm", "batchnorm", "unknown norm 'batchnorm': use one of ['layernorm', 'rmsnorm', 'rmsnorm_free']"),
        ("mlp", "no.such.Module", "mlp 'no.such.Module' cannot be imported"),
        ("positions", "torch.nn.functional.relu", "is not an nn.Module class"),
    ],
)
def test_unknown_variant_is_a_config_error(field, value, message):
    """A name is checked for form by the config and resolved (imported) where the network is built."""
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        GPT(GPTConfig(vocab_size=10, **{field: value}))


def test_rotary_needs_an_even_head_size():
    with pytest.raises(ConfigError, match="even head size"):
        GPT(GPTConfig(vocab_size=10, d_model=12, n_head=4, positions="rotary"))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind", ["gelu", "relu2"])
def test_mlp_kernels_keep_one_fewer_buffer_with_autograds_gradients(kind, bias):
    from craft.model.blocks import GeluMLP, ReluSquaredMLP
    from craft.model.kernels import GeluProj, ReluSquaredProj

    kernel, cls = (GeluProj, GeluMLP) if kind == "gelu" else (ReluSquaredProj, ReluSquaredMLP)
    act = F.gelu if kind == "gelu" else (lambda t: F.relu(t).square())
    h = torch.randn(2, 5, 12, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 12, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True) if bias else None
    assert torch.autograd.gradcheck(kernel.apply, (h, w, b))

    torch.manual_seed(0)
    mlp = cls(GPTConfig(vocab_size=10, block_size=8, d_model=16, n_layers=1, n_head=2, d_hid=64, bias=bias))
    x = torch.randn(3, 8, 16, requires_grad=True)

    def grads_and_saved(forward):
        saved = {}  # each storage once: ReLU and the square keep the same tensor

        def pack(t):
            saved[t.untyped_storage().data_ptr()] = t.numel()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = forward(x)
        grads = torch.autograd.grad(out.square().sum(), [x, *mlp.parameters()])
        return grads, sum(saved.values())

    plain, plain_saved = grads_and_saved(lambda t: mlp.proj(act(mlp.fc(t))))
    ours, ours_saved = grads_and_saved(mlp)
    for a, b_ in zip(plain, ours, strict=True):
        torch.testing.assert_close(a, b_, rtol=1e-5, atol=1e-6)
    assert plain_saved - ours_saved == 3 * 8 * 64  # one (B, T, d_hid) activation is no longer kept
    with torch.no_grad():  # the plain ops without grad (what ONNX export traces)
        torch.testing.assert_close(mlp(x), mlp.proj(act(mlp.fc(x))))


def test_cpu_dropout_keeps_a_bool_mask_scales_kept_values_and_routes_gradients_through_them():
    from craft.model.kernels import Dropout

    drop, p = Dropout(0.25), 0.25
    torch.manual_seed(0)
    x = (torch.rand(200, 1000) + 0.5).requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = drop(x)
    assert [t.dtype for t in saved] == [torch.bool]  # 1 byte per element kept for backward
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - p) < 0.005  # 200k draws: rate within 0.5 points
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))
    (grad,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(grad, kept.float() / (1 - p))
    assert torch.equal(drop.eval()(x), x)


def test_generation_stops_where_the_stop_condition_says():
    from craft.generate import stream

    m = tiny()
    prompt = torch.randint(0, 20, (1, 3))
    full = generate(m, prompt, SamplingConfig(temperature=0, max_new_tokens=30))
    target = int(full[0, 3 + 10])  # the 11th new token
    first = next(i for i in range(30) if int(full[0, 3 + i]) == target)
    stopped = list(stream(m, prompt, SamplingConfig(temperature=0, max_new_tokens=30), stop=lambda t: int(t) == target))
    assert len(stopped) == first + 1 and torch.equal(torch.cat([prompt, *stopped], 1), full[:, : 3 + first + 1])


def test_the_cache_is_created_per_call_and_never_stored_on_the_module():
    m = tiny()
    before = {name for name, _ in m.named_buffers()}
    generate(m, torch.zeros(1, 1, dtype=torch.long), SamplingConfig(temperature=0, max_new_tokens=5))
    assert {name for name, _ in m.named_buffers()} == before
    assert not any(isinstance(v, KVCache) for mod in m.modules() for v in vars(mod).values())


def test_cached_generation_runs_under_bf16_autocast():
    """As in a bf16-mixed predict: the cache stays float32, attention runs in the autocast dtype."""
    m = tiny()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = generate(m, torch.zeros(2, 3, dtype=torch.long), SamplingConfig(temperature=0, max_new_tokens=20))
    assert out.shape == (2, 23) and int(out.max()) < 20


def train_losses(m: GPT, steps: int = 30) -> list[float]:
    """AdamW steps on one fixed random batch (the same batch for every model): the losses."""
    x = torch.randint(0, 20, (8, 16), generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        _, loss = m(x[:, :-1], x[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_relu_squared_mlp_has_gelus_parameters_and_trains():
    """mlp: relu2 (Primer's ReLU(x)^2, used by modded-nanogpt and nanochat) at GeluMLP's exact count."""
    shape = dict(vocab_size=100, block_size=256, d_model=128, n_layers=6, n_head=8, d_hid=512)
    assert GPT(GPTConfig(**shape, mlp="relu2")).num_params() == GPT(GPTConfig(**shape)).num_params()
    m = tiny(mlp="relu2").train()
    losses = train_losses(m)
    assert losses[-1] < 0.7 * losses[0]
    assert "ReluSquaredMLP" in {type(mod).__name__ for mod in m.modules()}


def test_parameter_free_rmsnorm_has_no_parameters():
    """norm: rmsnorm_free drops RMSNorm's scales: 2 per layer and the final one, d_model each."""
    shape = dict(vocab_size=100, block_size=256, d_model=128, n_layers=6, n_head=8, d_hid=512)
    scaled, free = GPT(GPTConfig(**shape, norm="rmsnorm")), GPT(GPTConfig(**shape, norm="rmsnorm_free"))
    assert scaled.num_params() - free.num_params() == (2 * 6 + 1) * 128
    assert not list(free.ln_f.parameters())


GOT_CHAR = dict(vocab_size=100, block_size=256, d_model=128, n_layers=6, n_head=8, d_hid=512)


@pytest.mark.parametrize(
    "component, added",
    [
        ({"qk_norm": True}, 6 * 2 * (16 + 16)),  # a LayerNorm (weight + bias) of head size for q and k
        ({"qk_norm": True, "norm": "rmsnorm"}, 6 * 2 * 16 - (2 * 6 + 1) * 128),  # scales only, vs LayerNorm's
        ({"qk_norm": True, "norm": "rmsnorm_free"}, -(2 * 6 + 1) * 2 * 128),  # nothing for QK-norm
        ({"tie_head": False}, 100 * 128),
        ({"softcap": 15.0}, 0),
        ({"zero_init": True}, 0),
        ({"bias": False}, -((2 * 6 + 1) * 128 + 6 * (3 * 128 + 128 + 512 + 128))),
        ({"value_embeds": True}, 3 * (100 * 128 + 1)),  # layers 1, 3, 5: a table and a gate each
        ({"scalars": True}, 2 * 6),
        ({"unet": True}, 6 // 2),
    ],
    ids=variant_id,
)
def test_each_component_adds_exactly_its_parameters(component, added):
    """At the got_char shape (1,235,456 parameters with a 100-symbol vocabulary)."""
    assert GPT(GPTConfig(**GOT_CHAR, **component)).num_params() - 1_235_456 == added


@pytest.mark.parametrize("component", [*COMPONENTS, ALL_COMPONENTS], ids=variant_id)
def test_each_component_trains(component):
    losses = train_losses(tiny(**component).train())
    assert losses[-1] < 0.8 * losses[0]


def test_components_do_what_they_say():
    x = torch.randint(0, 20, (2, 16))
    capped = perturbed(tiny(softcap=0.5))
    logits, _ = capped(x, x)
    assert logits.abs().max() < 0.5  # squashed into (-cap, cap)
    untied = tiny(tie_head=False)
    assert untied.head.weight.data_ptr() != untied.tok_emb.weight.data_ptr()
    tied = tiny()
    assert tied.head.weight is tied.tok_emb.weight
    zero = tiny(zero_init=True, tie_head=False)
    projections = [p for n, p in zero.named_parameters() if n.endswith("proj.weight") or n == "head.weight"]
    assert len(projections) == 2 * 2 + 1 and all(not p.any() for p in projections)
    assert not tiny(zero_init=True).tok_emb.weight.eq(0).all()  # a tied head stays the embedding
    ve = tiny(value_embeds=True, n_layers=3)
    assert [b.attn.value_embed is not None for b in ve.blocks] == [True, False, True]
    scaled = tiny(scalars=True)
    plain = tiny()
    torch.testing.assert_close(scaled(x, x)[0], plain(x, x)[0])  # resid 1, x0 0: the plain stream at init
    skipped = perturbed(tiny(unet=True, n_layers=4))
    assert skipped.skips.weight.numel() == 2  # blocks 0, 1 feed blocks 3, 2
    unskipped = tiny(n_layers=4)
    unskipped.load_state_dict({k: v for k, v in skipped.state_dict().items() if not k.startswith("skips.")})
    assert not torch.allclose(skipped(x, x)[0], unskipped(x, x)[0])
    with torch.no_grad():
        skipped.skips.weight.zero_()
    torch.testing.assert_close(skipped(x, x)[0], unskipped(x, x)[0])  # weight 0: the plain stream
    q = perturbed(tiny(qk_norm=True, norm="rmsnorm_free"))
    seen = {}
    q.blocks[0].attn.qk_norm.register_forward_hook(lambda mod, inp, out: seen.update(q=out[0]))
    q(x, x)
    torch.testing.assert_close(seen["q"].pow(2).mean(-1), torch.ones(2, 4, 16), atol=2e-3, rtol=0)  # eps 1e-5
