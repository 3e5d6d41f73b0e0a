"""A craft model as a Hugging Face ``transformers`` model folder: config, safetensors weights, tokenizer.

    python -m craft export --format hf --ckpt_path logs/.../last.ckpt --out export/got_char_hf

The classic block (LayerNorm, GELU MLP, learned positions) is ``GPT2LMHeadModel``; the modern block
(RMSNorm, SwiGLU, rotary) is ``LlamaForCausalLM``: the same computation, weight for weight, so
``AutoModelForCausalLM.from_pretrained(out)`` gives craft's logits (checked at export, to 1e-4).
Any other combination has no architecture in ``transformers`` that computes it, and is refused
rather than written as a different model. ``transformers`` itself writes the folder
(``save_pretrained``), so its layout is whatever the installed version expects.

The tokenizer is a ``tokenizers`` JSON loaded by ``AutoTokenizer``: byte-level BPE as trained;
a char vocabulary as a word-level model over single characters (every character its own piece,
concatenated back on decode). Both encode exactly as craft does.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tokenizers as hf
import torch

from craft.data.tokenizers import BPETokenizer, CharTokenizer, Tokenizer
from craft.errors import CraftError
from craft.model import GPT
from craft.model.blocks import swiglu_width

CLASSIC = {"norm": "layernorm", "mlp": "gelu", "positions": "learned"}
MODERN = {"norm": "rmsnorm", "mlp": "swiglu", "positions": "rotary"}
# Components that change the forward and that craft does not map onto GPT-2 or Llama, at their
# defaults (zero_init only sets the starting weights, so it exports).
UNMAPPED = {"qk_norm": False, "tie_head": True, "softcap": 0.0, "value_embeds": False, "scalars": False, "unet": False}
EPS = 1e-5  # craft's LayerNorm and RMSNorm


def _transformers():
    try:
        import transformers
    except ImportError:
        raise CraftError("--format hf needs transformers and safetensors: pip install craft[hf]") from None
    return transformers


def target(architecture: Mapping[str, Any]) -> str:
    """``"gpt2"`` or ``"llama"``: the ``transformers`` architecture that computes a model with these
    fields (a checkpoint's hyperparameters, say), or a refusal."""
    changed = [f"{k} {architecture[k]}" for k, v in UNMAPPED.items() if architecture.get(k, v) != v]
    if changed:
        raise CraftError(
            f"neither GPT-2 nor Llama in transformers computes {', '.join(changed)}; "
            "export it with --format onnx instead"
        )
    parts = {k: architecture.get(k) for k in CLASSIC}
    if parts == CLASSIC:
        return "gpt2"
    if parts == MODERN:
        return "llama"
    block = ", ".join(f"{k} {v}" for k, v in parts.items())
    raise CraftError(
        f"no transformers architecture computes this block ({block}): GPT-2 is layernorm + gelu + learned, "
        "Llama is rmsnorm + swiglu + rotary; export it with --format onnx instead"
    )


def hf_model(gpt: GPT) -> Any:
    """The ``transformers`` model holding ``gpt``'s weights (fp32, eval mode)."""
    transformers = _transformers()
    c = gpt.config
    sd = {k: v.detach().float().clone() for k, v in gpt.state_dict().items()}
    if target(vars(c)) == "gpt2":
        config = transformers.GPT2Config(
            vocab_size=c.vocab_size,
            n_positions=c.block_size,
            n_embd=c.d_model,
            n_layer=c.n_layers,
            n_head=c.n_head,
            n_inner=c.d_hid,
            activation_function="gelu",  # exact (erf) GELU, as F.gelu; GPT-2's own is the tanh one
            layer_norm_epsilon=EPS,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=None,
            eos_token_id=None,
            tie_word_embeddings=True,
        )
        weights = _gpt2_weights(sd, c)
        model = transformers.GPT2LMHeadModel(config)
    else:
        config = transformers.LlamaConfig(
            vocab_size=c.vocab_size,
            hidden_size=c.d_model,
            intermediate_size=swiglu_width(c.d_hid),
            num_hidden_layers=c.n_layers,
            num_attention_heads=c.n_head,
            num_key_value_heads=c.n_head,
            head_dim=c.head_size,
            max_position_embeddings=c.block_size,
            rms_norm_eps=EPS,
            rope_theta=10_000.0,
            attention_bias=c.bias,
            mlp_bias=c.bias,
            hidden_act="silu",
            bos_token_id=None,
            eos_token_id=None,
            tie_word_embeddings=True,
        )
        weights = _llama_weights(sd, c)
        model = transformers.LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to the token embedding
    if missing or unexpected:
        raise CraftError(f"weight mapping is incomplete: missing {missing[:4]}, unexpected {unexpected[:4]}")
    model.tie_weights()
    return model.eval()


def _gpt2_weights(sd: dict[str, torch.Tensor], c) -> dict[str, torch.Tensor]:
    # GPT-2 keeps its projections as Conv1D, (in, out): the transpose of nn.Linear's weight. Its
    # norms and projections always have biases: where craft has none they are zeros, the same sums.
    def bias(key: str, n: int) -> torch.Tensor:
        return sd.get(key, torch.zeros(n))

    w = {"transformer.wte.weight": sd["tok_emb.weight"], "transformer.wpe.weight": sd["positions.emb.weight"]}
    for i in range(c.n_layers):
        s, t = f"blocks.{i}.", f"transformer.h.{i}."
        for ours, theirs, n in (
            ("attn.qkv", "attn.c_attn", 3 * c.d_model),
            ("attn.proj", "attn.c_proj", c.d_model),
            ("mlp.fc", "mlp.c_fc", c.d_hid),
            ("mlp.proj", "mlp.c_proj", c.d_model),
        ):
            w[t + theirs + ".weight"] = sd[s + ours + ".weight"].t().contiguous()
            w[t + theirs + ".bias"] = bias(s + ours + ".bias", n)
        for ours, theirs in (("ln_1", "ln_1"), ("ln_2", "ln_2")):
            w[t + theirs + ".weight"] = sd[s + ours + ".weight"]
            w[t + theirs + ".bias"] = bias(s + ours + ".bias", c.d_model)
    w["transformer.ln_f.weight"] = sd["ln_f.weight"]
    w["transformer.ln_f.bias"] = bias("ln_f.bias", c.d_model)
    return w


def _llama_weights(sd: dict[str, torch.Tensor], c) -> dict[str, torch.Tensor]:
    # One qkv matmul in craft is three in Llama (rows q, k, v; heads in the same order); one
    # gate_up is gate then up. craft's rotary pairs dimension i with i + head_size/2, as Llama does.
    w = {"model.embed_tokens.weight": sd["tok_emb.weight"], "model.norm.weight": sd["ln_f.weight"]}
    for i in range(c.n_layers):
        s, t = f"blocks.{i}.", f"model.layers.{i}."
        for suffix in ("weight", "bias") if c.bias else ("weight",):
            q, k, v = sd[f"{s}attn.qkv.{suffix}"].chunk(3, dim=0)
            gate, up = sd[f"{s}mlp.gate_up.{suffix}"].chunk(2, dim=0)
            w.update(
                {
                    f"{t}self_attn.q_proj.{suffix}": q,
                    f"{t}self_attn.k_proj.{suffix}": k,
                    f"{t}self_attn.v_proj.{suffix}": v,
                    f"{t}self_attn.o_proj.{suffix}": sd[f"{s}attn.proj.{suffix}"],
                    f"{t}mlp.gate_proj.{suffix}": gate,
                    f"{t}mlp.up_proj.{suffix}": up,
                    f"{t}mlp.down_proj.{suffix}": sd[f"{s}mlp.proj.{suffix}"],
                }
            )
        w[f"{t}input_layernorm.weight"] = sd[f"{s}ln_1.weight"]
        w[f"{t}post_attention_layernorm.weight"] = sd[f"{s}ln_2.weight"]
    return {k: v.contiguous() for k, v in w.items()}


def hf_tokenizer(tokenizer: Tokenizer) -> hf.Tokenizer:
    """A ``tokenizers.Tokenizer`` that encodes and decodes as ``tokenizer`` does."""
    if isinstance(tokenizer, BPETokenizer):
        return hf.Tokenizer.from_str(tokenizer.init_args()["trained"])
    if isinstance(tokenizer, CharTokenizer):
        vocab = {c: i for i, c in enumerate(tokenizer.vocab or [])}
        tok = hf.Tokenizer(hf.models.WordLevel(vocab, unk_token=None))
        # Every code point its own piece ([\s\S] matches any one), glued back together on decode.
        tok.pre_tokenizer = hf.pre_tokenizers.Split(hf.Regex(r"[\s\S]"), behavior="isolated")
        tok.decoder = hf.decoders.Fuse()
        return tok
    raise CraftError(f"--format hf writes craft's char and bpe tokenizers, not {tokenizer.kind!r}")


def export_hf(gpt: GPT, tokenizer: Tokenizer, out: Path, atol: float = 1e-4) -> list[str]:
    """Write the model and tokenizer into ``out`` (an existing, empty folder), load them back with
    the Auto classes and check them against craft; the names of the files written."""
    transformers = _transformers()
    model = hf_model(gpt)
    model.save_pretrained(out, safe_serialization=True)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=hf_tokenizer(tokenizer), clean_up_tokenization_spaces=False
    )
    fast.save_pretrained(out)
    check_hf_parity(gpt, tokenizer, out, atol)
    return sorted(p.name for p in out.iterdir())


def check_hf_parity(gpt: GPT, tokenizer: Tokenizer, folder: Path, atol: float = 1e-4) -> float:
    """Logits of the reloaded ``transformers`` model against craft's on the same ids, and its
    tokenizer's ids on a sample of the vocabulary; the largest logit difference."""
    transformers = _transformers()
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    fast = transformers.AutoTokenizer.from_pretrained(folder)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, gpt.config.vocab_size, (2, min(gpt.config.block_size, 64)), generator=g)
    was = gpt.training
    gpt.eval()
    with torch.no_grad():
        ours, _ = gpt(ids, all_logits=True)
        theirs = model(ids).logits
    gpt.train(was)
    diff = (ours.float() - theirs.float()).abs().max().item()
    if not diff <= atol:
        raise CraftError(f"the transformers model's logits differ from craft's by {diff:.2e} (more than {atol:g})")
    text = tokenizer.decode(ids[0].tolist())  # any text the model could write (BPE: maybe with U+FFFD)
    again = tokenizer.encode(text)
    if fast(text)["input_ids"] != again or fast.decode(again) != tokenizer.decode(again):
        raise CraftError("the exported tokenizer does not encode as craft's does")
    return diff
