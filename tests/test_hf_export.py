"""python -m craft export --format hf: a transformers model folder with craft's logits and text."""

import json

import pytest
import torch

from craft import LanguageModel
from craft.cli import main
from craft.errors import CraftError
from craft.export import export
from craft.export import main as export_main
from tests.helpers import make_text, tiny_args

transformers = pytest.importorskip("transformers", reason="pip install craft[hf] (transformers, safetensors)")

BLOCKS = {
    "classic": [],
    "modern": ["--model.norm", "rmsnorm", "--model.mlp", "swiglu", "--model.positions", "rotary"],
}
NEW_TOKENS = 200


def trained(tmp_path, block: str, *extra: str):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(make_text(30_000) + "\nnaïve café ✓", encoding="utf-8")
    args = tiny_args(corpus, tmp_path / "logs", *BLOCKS[block], "--data.block_size", "256", *extra)
    main(["fit", *args, "--trainer.max_steps", "25", "--trainer.val_check_interval", "25"])
    return tmp_path / "logs" / "tiny" / "checkpoints" / "last.ckpt"


@pytest.mark.slow
@pytest.mark.parametrize("tokenizer", ["char", "bpe"])
@pytest.mark.parametrize("block", ["classic", "modern"])
def test_transformers_loads_the_export_with_craft_logits_and_greedy_text(tmp_path, block, tokenizer):
    extra = ["--config", "configs/presets/bpe.yaml", "--data.tokenizer.init_args.vocab_size", "300"]
    ckpt = trained(tmp_path, block, *(extra if tokenizer == "bpe" else []))
    export(ckpt, tmp_path / "hf", format="hf")
    files = {p.name for p in (tmp_path / "hf").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == [
        "GPT2LMHeadModel" if block == "classic" else "LlamaForCausalLM"
    ]
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    fast = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    lm = LanguageModel.load_from_checkpoint(ckpt, weights_only=True).eval()

    text = make_text(2_000, seed=3)
    ids = lm.tokenizer.encode(text)
    assert fast(text)["input_ids"] == ids and fast.decode(ids) == text
    x = torch.tensor([ids[:256]])
    with torch.no_grad():
        ours, _ = lm.model(x, all_logits=True)
        theirs = model(x).logits
    assert (ours - theirs).abs().max().item() < 1e-4

    prompt = "\nThe "  # "\n" is id 0 for char: the pad id below
    ours_text = lm.generate(prompt, max_new_tokens=NEW_TOKENS, temperature=0)
    p = torch.tensor([fast(prompt)["input_ids"]])
    with torch.no_grad():  # the mask given: inferred from a pad id, it would hide prompt tokens sharing it
        out = model.generate(
            p, attention_mask=torch.ones_like(p), max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0
        )
    theirs_text = fast.decode(out[0, len(fast(prompt)["input_ids"]) :].tolist())
    assert len(out[0]) == len(fast(prompt)["input_ids"]) + NEW_TOKENS
    assert theirs_text == ours_text


@pytest.mark.parametrize(
    "change, message",
    [
        # rmsnorm + gelu + learned: neither GPT-2 nor Llama
        (
            {"norm": "rmsnorm"},
            "no transformers architecture computes this block (norm rmsnorm, mlp gelu, positions learned)",
        ),
        (
            {"qk_norm": True, "softcap": 15.0},
            "neither GPT-2 nor Llama in transformers computes qk_norm True, softcap 15.0",
        ),
    ],
    ids=["block", "components"],
)
def test_a_block_transformers_has_no_class_for_is_refused_in_one_line(tiny_run, tmp_path, capsys, change, message):
    ckpt, _ = tiny_run
    mixed = tmp_path / "mixed.ckpt"
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint["hyper_parameters"].update(change)
    torch.save(checkpoint, mixed)
    with pytest.raises(SystemExit) as e:
        export_main(["--format", "hf", "--ckpt_path", str(mixed), "--out", str(tmp_path / "hf")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert message in err
    assert not (tmp_path / "hf").exists() and not list(tmp_path.glob(".hf*"))


@pytest.mark.slow
def test_hf_export_of_the_tiny_run_matches_and_leaves_nothing_on_failure(tiny_run, tmp_path):
    ckpt, _ = tiny_run
    export(ckpt, tmp_path / "hf", format="hf")
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    lm = LanguageModel.load_from_checkpoint(ckpt, weights_only=True).eval()
    x = torch.randint(0, lm.config.vocab_size, (3, lm.config.block_size))
    with torch.no_grad():
        assert (lm.model(x, all_logits=True)[0] - model(x).logits).abs().max().item() < 1e-4
    with pytest.raises(CraftError, match="exists and is not empty"):
        export(ckpt, tmp_path / "hf", format="hf")
