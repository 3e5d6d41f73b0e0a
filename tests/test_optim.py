"""Optimizers and schedules (craft/optim.py): Muon's split of the parameters, the LR curves, a real run."""

import math

import pytest
import torch
import torch.optim._muon as torch_muon

from craft.cli import main
from craft.errors import ConfigError
from craft.model import GPT, GPTConfig
from craft.optim import Muon, MuonAdamW, adjusted_lr, build_optimizer, lr_schedule, newton_schulz
from tests.helpers import ALL_COMPONENTS, scalars, tiny_args


def muon(model: torch.nn.Module) -> MuonAdamW:
    return build_optimizer(model, "muon", 3e-3, 0.1, (0.9, 0.99), 0.01, 0.95, "match_rms_adamw")


@pytest.mark.parametrize("fields", [{}, {"tie_head": False}, ALL_COMPONENTS], ids=["classic", "untied", "all"])
def test_muon_and_adamw_groups_cover_every_parameter_exactly_once(fields):
    model = GPT(GPTConfig(vocab_size=30, block_size=16, d_model=32, n_layers=3, n_head=4, d_hid=64, **fields))
    opt = muon(model)
    grouped = [p for g in opt.param_groups for p in g["params"]]
    assert len(grouped) == len({id(p) for p in grouped})  # none twice
    assert {id(p) for p in grouped} == {id(p) for p in model.parameters()}  # none left out
    names = {id(p): n for n, p in model.named_parameters()}
    on_muon = sorted(names[id(p)] for g in opt.muon.param_groups for p in g["params"])
    mlp = ["mlp.fc.weight", "mlp.proj.weight"] if model.config.mlp != "swiglu" else ["mlp.gate_up.weight"]
    expected = sorted(f"blocks.{i}.{m}" for i in range(3) for m in ["attn.qkv.weight", "attn.proj.weight", *mlp])
    assert on_muon == expected  # the blocks' matrices; embeddings, value embeddings, head, norms on AdamW
    decayed = {names[id(p)] for g in opt.adamw.param_groups if g["weight_decay"] for p in g["params"]}
    assert decayed == ({"head.weight"} if not model.config.tie_head else set())


def test_muon_adamw_steps_both_and_round_trips_its_state():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=30, block_size=16, d_model=32, n_layers=2, n_head=4, d_hid=64))
    opt = muon(model)
    x = torch.randint(0, 30, (4, 16))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model(x, x)[1].backward()
    opt.step()
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())  # every parameter moved
    state = opt.state_dict()
    again = muon(model)
    again.load_state_dict(state)
    assert again.state_dict()["muon"]["state"].keys() == state["muon"]["state"].keys()
    with pytest.raises(ConfigError, match="not Muon \\+ AdamW"):
        again.load_state_dict(torch.optim.AdamW(model.parameters()).state_dict())


@pytest.mark.parametrize("shape", [(384, 128), (128, 512), (64, 16)])
def test_float32_newton_schulz_is_torchs_iteration_without_bf16_rounding(shape):
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    coefficients, steps, eps = (torch_muon.DEFAULT_A, torch_muon.DEFAULT_B, torch_muon.DEFAULT_C), 5, 1e-7
    ours = newton_schulz(grad, coefficients, steps, eps, torch.float32)
    theirs = torch_muon._zeropower_via_newtonschulz(grad, coefficients, steps, eps)
    assert ours.dtype == torch.float32 and ours.shape == grad.shape
    assert torch.equal(newton_schulz(grad, coefficients, steps, eps, torch.bfloat16), theirs)  # torch's, in bf16
    # The same iteration: equal to bf16's rounding (bf16 keeps 8 bits: ~0.4% per element).
    assert (ours - theirs.float()).abs().max() < 0.05 * theirs.float().abs().max()
    # Orthogonalized: singular values near 1 (the quintic leaves them in about 0.5-1.5), not the grad's.
    s = torch.linalg.svdvals(ours)
    assert 0.4 < s.min() and s.max() < 1.6 and torch.linalg.svdvals(grad).max() > 5


@pytest.mark.parametrize("nesterov, adjust", [(True, "match_rms_adamw"), (False, "original"), (True, None)])
def test_our_muon_in_bfloat16_steps_exactly_as_torchs(nesterov, adjust):
    """craft's Muon owns its step: in torch's bfloat16 it must move every matrix exactly as
    torch.optim.Muon does (if torch changes its step, this fails and ours is brought in line)."""
    torch.manual_seed(0)
    shapes = [(48, 16), (16, 48), (32, 32)]
    ours = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    kw = {"lr": 0.02, "weight_decay": 0.1, "momentum": 0.9, "nesterov": nesterov, "adjust_lr_fn": adjust}
    a, b = Muon(ours, ns_dtype=torch.bfloat16, **kw), torch.optim.Muon(theirs, **kw)
    for _ in range(3):
        for p, q in zip(ours, theirs, strict=True):
            p.grad = torch.randn(p.shape)
            q.grad = p.grad.clone()
        a.step()
        b.step()
    assert all(torch.equal(p, q) for p, q in zip(ours, theirs, strict=True))
    assert torch.equal(a.state[ours[0]]["momentum_buffer"], b.state[theirs[0]]["momentum_buffer"])


def test_muon_on_cpu_iterates_in_float32_and_patches_nothing_of_torch():
    model = GPT(GPTConfig(vocab_size=17, block_size=8, d_model=16, n_layers=1, n_head=2, d_hid=32))
    opt = build_optimizer(model, "muon", 1e-3, 0.1, (0.9, 0.95), 0.02, 0.95, "match_rms_adamw")
    original = torch_muon._zeropower_via_newtonschulz
    p = opt.muon.param_groups[0]["params"][0]
    before = p.detach().clone()
    model(torch.randint(0, 17, (2, 8)), torch.randint(0, 17, (2, 8)))[1].backward()
    grad = p.grad.clone()
    opt.step()
    assert torch_muon._zeropower_via_newtonschulz is original
    g = opt.muon.param_groups[0]
    update = newton_schulz(
        grad.lerp(grad * (1 - 0.95), 0.95), g["ns_coefficients"], g["ns_steps"], g["eps"], torch.float32
    )
    expected = before * (1 - g["lr"] * 0.1) - adjusted_lr(g["lr"], "match_rms_adamw", p.shape) * update
    torch.testing.assert_close(p.detach(), expected, rtol=1e-6, atol=1e-7)


def test_schedules_warm_up_then_cosine_or_hold_and_decay():
    total, warmup, floor = 100, 10, 0.1
    cos = [lr_schedule("cosine", total, warmup, floor, 0.2)(s) for s in range(total)]
    wsd = [lr_schedule("wsd", total, warmup, floor, 0.2)(s) for s in range(total)]
    assert cos[:warmup] == wsd[:warmup] == [(s + 1) / 11 for s in range(warmup)]
    assert cos[10] == 1.0 and math.isclose(cos[55], floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert wsd[10:80] == [1.0] * 70  # stable until the last 20% of the steps
    assert wsd[80] == pytest.approx(1 - 0.9 / 20) and wsd[99] == pytest.approx(floor)  # linear to the floor
    assert all(a > b for a, b in zip(wsd[80:-1], wsd[81:], strict=True))
    with pytest.raises(ConfigError, match="unknown schedule 'linear'"):
        lr_schedule("linear", total, warmup, floor, 0.2)


def test_a_muon_run_trains_and_logs_every_groups_learning_rate(corpus, tmp_path):
    args = tiny_args(
        corpus,
        tmp_path,
        *("--model.optimizer", "muon", "--model.schedule", "wsd", "--trainer.max_steps", "12"),
        *("--model.tie_head", "false", "--model.lr_mults", "{embed: 10, head: 0.5}"),
    )
    main(["fit", *args])
    loss = scalars(tmp_path / "tiny", "train/loss_step")
    assert loss[11] < loss[0]
    # Muon's group, then AdamW's: the decaying head, then the embeddings and the scalars (norms, biases).
    peaks = [max(scalars(tmp_path / "tiny", f"lr-MuonAdamW/pg{i}").values()) for i in range(1, 5)]
    assert peaks == pytest.approx([0.01, 0.5e-3, 10e-3, 1e-3])


@pytest.mark.parametrize("tie_head", [True, False])
def test_lr_mults_give_each_role_its_peak_and_default_to_the_two_classic_groups(tie_head):
    from craft.optim import param_groups, param_role

    model = GPT(GPTConfig(vocab_size=30, block_size=16, d_model=32, n_layers=2, n_head=4, d_hid=64, tie_head=tie_head))
    names = {id(p): n for n, p in model.named_parameters()}
    mults = {"matrix": 2.0, "embed": 10.0, "head": 0.5, "scalar": 3.0}
    groups = param_groups(model, 0.1, lr=1e-3, lr_mults=mults)
    for g in groups:
        roles = {param_role(names[id(p)], p) for p in g["params"]}
        assert len(roles) == 1 and g["lr"] == pytest.approx(1e-3 * mults[roles.pop()])
        assert (g["weight_decay"] > 0) == any(param_role(names[id(p)], p) in ("matrix", "head") for p in g["params"])
    assert len(groups) == (3 if tie_head else 4)  # a tied head is the token embedding
    # Without factors: craft's two groups, decaying first, each in the model's order (old checkpoints resume).
    plain = param_groups(model, 0.1, lr=1e-3)
    order = [n for n, _ in model.named_parameters()]
    decay = [n for n, p in model.named_parameters() if param_role(n, p) in ("matrix", "head")]
    assert [[names[id(p)] for p in g["params"]] for g in plain] == [decay, [n for n in order if n not in decay]]
    assert [g["weight_decay"] for g in plain] == [0.1, 0.0]


@pytest.mark.parametrize(
    "mults, optimizer, message",
    [
        ({"embeddings": 2.0}, "adamw", "unknown role 'embeddings' in model.lr_mults"),
        ({"head": 0.0}, "adamw", "lr_mults.head must be a positive number"),
        ({"matrix": 2.0}, "muon", "no effect under Muon.*model.muon_lr"),
    ],
)
def test_bad_lr_mults_are_refused_in_one_line(mults, optimizer, message):
    from craft import LanguageModel

    with pytest.raises(ConfigError, match=message):
        LanguageModel(vocab_size=10, optimizer=optimizer, lr_mults=mults)
