"""craft.export --web: the static page, driven in a real headless Chromium (slow tier).

Nothing is installed at run time: CI's set-up (.ci/run) installs Debian's chromium and node, and
``npm ci --prefix craft/web`` (onnxruntime-web and playwright-core, pinned in its package lock).
Where any of them is missing the browser test skips and says what to install.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from craft import LanguageModel
from craft.cli import main
from craft.errors import CraftError
from craft.export import ORT_WEB_FILES, check_web, export
from tests.helpers import ROOT, make_text, tiny_args

sys.path.insert(0, str(ROOT))
from benchmarks.export_runtime import DRIVER, browser_missing, static_server  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


# The tiny classic block, and the speedrun recipe (the configs' default) at head size 16, the
# smallest whose rotary the fused attention node does itself: both export graphs run in the page.
RECIPES = {"classic": [], "recipe": ["--config", str(ROOT / "configs/presets/speedrun.yaml")]}
RECIPE_SHAPE = {"classic": [], "recipe": ["--model.d_model", "64"]}


@pytest.fixture(scope="module", params=list(RECIPES))
def web_export(tmp_path_factory, request):
    missing = browser_missing()
    if missing:
        pytest.skip(f"the browser test needs Chromium, node and craft/web's packages: {missing}")
    tmp = tmp_path_factory.mktemp("web")
    corpus = tmp / "corpus.txt"
    corpus.write_text(make_text(40_000), encoding="utf-8")
    recipe = request.param
    args = [*RECIPES[recipe], *tiny_args(corpus, tmp / "logs"), *RECIPE_SHAPE[recipe]]
    main(["fit", *args, "--trainer.max_steps", "30", "--trainer.val_check_interval", "30"])
    ckpt = tmp / "logs" / "tiny" / "checkpoints" / "last.ckpt"
    export(ckpt, tmp / "out", int8=True, web=True)
    return tmp / "out", LanguageModel.load_from_checkpoint(ckpt, weights_only=True).eval()


def drive(url: str, screenshot: Path | None = None) -> dict:
    cmd = ["node", str(DRIVER), url, *([str(screenshot)] if screenshot else [])]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_page_generates_pytorchs_greedy_text_in_chromium_and_reports_its_speed(web_export, tmp_path):
    out, lm = web_export
    assert {"index.html", "craft.js", *ORT_WEB_FILES} <= {p.name for p in out.iterdir()}
    with static_server(out) as url:
        for model in ("fp32", "int8"):
            # 60 new tokens with block_size 16: the page's window slides several times
            query = f"?prompt=The%20king&max_new_tokens=60&temperature=0&model={model}&autorun=1"
            shot = tmp_path / f"{model}.png"
            result = drive(url + query, shot)
            assert "error" not in result, result
            assert result["tokens"] == 60 and result["tokens_per_sec"] > 0
            assert "tokens/s" in result["status"]
            assert shot.read_bytes().startswith(PNG)
            if model == "fp32":
                assert result["text"] == lm.generate("The king", max_new_tokens=60, temperature=0)
        # The manifest's own sampling settings (temperature 0.8 here): text in the vocabulary, same per seed.
        a = drive(url + "?prompt=The&max_new_tokens=40&seed=3&autorun=1")
        b = drive(url + "?prompt=The&max_new_tokens=40&seed=3&autorun=1")
        assert a["text"] == b["text"] and len(a["text"]) == 40
        assert set(a["text"]) <= set(lm.tokenizer.state()["vocab"])
        bad = drive(url + "?prompt=%E6%97%A5&max_new_tokens=5&autorun=1")
        assert "outside the model's vocabulary" in bad["error"]
        # The manifest's stop strings end the page's text where they end PyTorch's.
        greedy = lm.generate("The king", max_new_tokens=60, temperature=0)
        stop = greedy[20:22]
        saved = (out / "manifest.json").read_text()
        manifest = json.loads(saved)
        manifest["sampling"]["stop"] = [stop]
        (out / "manifest.json").write_text(json.dumps(manifest))
        try:
            cut = drive(url + "?prompt=The%20king&max_new_tokens=60&temperature=0&autorun=1")
        finally:
            (out / "manifest.json").write_text(saved)
        assert cut["text"] == greedy[: greedy.index(stop)]
        assert cut["text"] == lm.generate("The king", max_new_tokens=60, temperature=0, stop=[stop])


def test_web_refuses_without_onnxruntime_web_and_names_the_command(tmp_path, monkeypatch):
    import craft.export.web

    monkeypatch.setattr(craft.export.web, "WEB", tmp_path / "web")
    with pytest.raises(CraftError, match=r"npm ci --prefix .*web.*lacks ort\.wasm\.min\.mjs"):
        check_web("char")


def test_web_refuses_a_bpe_model():
    with pytest.raises(CraftError, match="char tokenizer only; this model's is bpe"):
        check_web("bpe")


def test_web_files_are_pinned_in_the_package_lock():
    lock = json.loads((ROOT / "craft" / "web" / "package-lock.json").read_text())
    pkg = json.loads((ROOT / "craft" / "web" / "package.json").read_text())
    assert pkg["dependencies"] == {"onnxruntime-web": "1.30.0"}  # exact, not a range
    assert lock["packages"]["node_modules/onnxruntime-web"]["version"] == "1.30.0"
    assert lock["packages"]["node_modules/onnxruntime-web"]["integrity"].startswith("sha512-")


def test_generation_loop_graph_draws_by_craft_rules(tmp_path):
    """The page's graph (the decoder step inside an ONNX Loop, sampling in-graph) against PyTorch:
    greedy is PyTorch's greedy; top-k 1 and a tiny top-p leave only the greedy token to draw."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from craft.export import export_onnx, save_ort_optimized, write_loop
    from craft.generate import SamplingConfig, generate
    from craft.model import GPT
    from craft.model.config import GPTConfig

    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=40, block_size=16, d_model=32, n_layers=2, n_head=4, d_hid=48)).eval()
    export_onnx(gpt, tmp_path / "traced.onnx")
    save_ort_optimized(tmp_path / "traced.onnx", tmp_path / "model.onnx")
    write_loop(tmp_path / "model.onnx", tmp_path / "loop.onnx", 2)
    session = ort.InferenceSession(str(tmp_path / "loop.onnx"), providers=["CPUExecutionProvider"])
    prompt = torch.tensor([[3, 1, 4, 1, 5]])
    n = 16 - prompt.size(1) + 1  # until the window is full, as the page calls it
    expected = generate(gpt, prompt, SamplingConfig(temperature=0, max_new_tokens=n))[0, 5:].tolist()

    def draw(temperature: float, top_k: int, top_p: float) -> list[int]:
        feeds = {
            "n": np.array(n),
            "loop_ids": prompt.numpy(),
            "loop_pos": np.arange(5),
            "uniforms": np.random.default_rng(0).random(n, dtype=np.float32),
            "temperature": np.array(temperature, np.float32),
            "top_k": np.array([top_k]),
            "top_p": np.array(top_p, np.float32),
            **{f"loop_{k}_{i}": np.zeros((1, 4, 16, 8), np.float32) for i in range(2) for k in "kv"},
        }
        return session.run(["tokens"], feeds)[0].reshape(-1).tolist()

    assert draw(0.0, 40, 1.0) == expected
    assert draw(1.0, 1, 1.0) == expected
    assert draw(1.0, 40, 1e-6) == expected
    sampled = draw(5.0, 40, 1.0)  # a hot temperature: other tokens than greedy's
    assert sampled != expected and all(0 <= t < 40 for t in sampled)
