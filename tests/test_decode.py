"""The compiled decode step: same tokens as eager generation, cached per checkpoint, eager fallback."""

import shutil
from pathlib import Path

import pytest
import torch

from craft.cli import main
from craft.data.tokenizers import CharTokenizer
from craft.errors import CraftWarning
from craft.generate import SamplingConfig, generate
from craft.generate.compiled import DecodeStep, compiled
from craft.model import GPT, GPTConfig
from craft.model.cache import KVCache
from craft.module import LanguageModel
from tests.helpers import ALL_COMPONENTS, perturbed, tiny_args

needs_compiler = pytest.mark.skipif(
    not (shutil.which("g++") or shutil.which("c++")), reason="AOTInductor needs a C++ compiler"
)


def tiny_gpt(**fields) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=50, block_size=16, d_model=32, n_layers=2, n_head=4, d_hid=64, **fields)
    return GPT(config).eval()


@pytest.mark.parametrize(
    "fields",
    [{}, {"positions": "rotary", "mlp": "swiglu", "norm": "rmsnorm"}, ALL_COMPONENTS],
    ids=["learned-gelu-layernorm", "rotary-swiglu-rmsnorm", "all-components"],
)
@pytest.mark.parametrize("sampling", [SamplingConfig(temperature=0), SamplingConfig(0.9, top_k=10)])
def test_the_exported_step_generates_the_eager_tokens_across_window_slides(fields, sampling):
    """The step AOTInductor compiles is GPT.forward traced by torch.export: run here as the exported
    program (no C++ compiler needed), it must give the eager tokens. 40 new tokens with block 16:
    the context slides (prefilled again into the same buffers) several times."""
    gpt = perturbed(tiny_gpt(**fields))
    sampling = SamplingConfig(sampling.temperature, sampling.top_k, sampling.top_p, max_new_tokens=40)
    prompt = torch.randint(0, 50, (2, 5), generator=torch.Generator().manual_seed(1))
    example = (torch.zeros(2, 1, dtype=torch.long), torch.tensor([0]), *KVCache.empty(gpt.config, 2).buffers())
    with torch.no_grad():
        program = torch.export.export(DecodeStep(gpt), example).module()
    eager = generate(gpt, prompt, sampling, torch.Generator().manual_seed(3))
    fast = generate(gpt, prompt, sampling, torch.Generator().manual_seed(3), step=compiled(program))
    assert torch.equal(eager, fast)


def test_one_token_steps_match_the_full_forward_pass():
    gpt = tiny_gpt(positions="rotary")
    ids = torch.randint(0, 50, (3, 16), generator=torch.Generator().manual_seed(2))
    cache = KVCache.empty(gpt.config, 3)
    step = DecodeStep(gpt)
    with torch.no_grad():
        full, _ = gpt(ids, all_logits=True)
        steps = torch.stack([step(ids[:, [t]], torch.tensor([t]), *cache.buffers()) for t in range(16)], dim=1)
    torch.testing.assert_close(steps, full, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@needs_compiler
def test_compiled_decode_through_predict_matches_eager_and_is_compiled_once(corpus, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    logs = tmp_path / "logs"
    main(["fit", *tiny_args(corpus, logs, "--model.positions", "rotary"), "--trainer.max_steps", "5"])
    # 40 new tokens with block 16: generation slides its window past the compiled buffers' end.
    predict = ["predict", *tiny_args(corpus, logs), "--ckpt_path", "last", "--data.prompts", '["The king"]']
    # Sampled (seeded), not greedy: an undertrained model's greedy text is one repeated character.
    predict += ["--model.sampling.temperature", "1.0", "--model.sampling.top_k", "null"]
    predict += ["--model.sampling.max_new_tokens", "40"]

    def predicted(*extra: str) -> str:
        capsys.readouterr()
        main([*predict, *extra])
        return capsys.readouterr().out

    eager = predicted()
    fast = predicted("--model.compiled_decode", "true")
    assert "The king" in eager and len(set(eager.split("The king")[-1])) > 5
    assert fast == eager
    packages = list((cache / "craft" / "decode").glob("*.pt2"))
    assert len(packages) == 1
    stamp = packages[0].stat().st_mtime_ns
    assert predicted("--model.compiled_decode", "true") == eager  # a second run loads the package
    assert list((cache / "craft" / "decode").glob("*")) == packages and packages[0].stat().st_mtime_ns == stamp


def broken_package(exported, package_path, inductor_configs):
    """Stands in for a compile whose package then fails to load (as one GPU image's did, by segfault)."""
    Path(package_path).write_bytes(b"not a package")


@pytest.mark.slow
@pytest.mark.parametrize("failure", ["no compiler", "package fails to load"])
def test_generation_falls_back_to_eager_when_the_step_cannot_compile(failure, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    if failure == "package fails to load":
        monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", broken_package)
    compiler = str(tmp_path / "no-such-compiler") if failure == "no compiler" else None
    tokenizer = CharTokenizer(list("abcdefghij "))
    models = []
    for use_compiled in (True, False):
        torch.manual_seed(0)
        shape = {"block_size": 16, "d_model": 32, "n_layers": 2, "n_head": 4, "d_hid": 64}
        lm = LanguageModel(tokenizer.vocab_size, compiled_decode=use_compiled, **shape)
        lm.set_tokenizer(tokenizer)
        models.append(lm)
    reason = "could not compile the decode step" + ("" if compiler else r" \(.*child process \(exit code 1")
    with torch._inductor.config.patch({"cpp.cxx": (None, compiler)} if compiler else {}):
        with pytest.warns(CraftWarning, match=reason + ".* eager PyTorch"):
            text = models[0].generate("abc", max_new_tokens=20, temperature=0)
    assert text == models[1].generate("abc", max_new_tokens=20, temperature=0)
    assert not list(tmp_path.rglob("*.pt2"))  # a failed compile leaves no package behind
