"""craft export and craft run: an ONNX decoder with a KV cache, int8, and generation without torch."""

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from craft import LanguageModel
from craft.cli import main
from craft.errors import CraftError
from craft.export import export
from craft.runtime import ExportedModel, RunError
from craft.sampling import SamplingConfig
from tests.helpers import ALL_COMPONENTS, ROOT, make_text, perturbed, tiny_args

LOGITS_ATOL = 1e-4  # fp32 ONNX vs PyTorch, largest absolute difference of any logit
INT8_BPC_BOUND = 0.05  # int8 vs fp32 val bits per character, on a tiny model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    corpus = tmp / "corpus.txt"
    corpus.write_text(make_text(40_000), encoding="utf-8")
    main(["fit", *tiny_args(corpus, tmp / "logs"), "--trainer.max_steps", "30", "--trainer.val_check_interval", "30"])
    ckpt = tmp / "logs" / "tiny" / "checkpoints" / "last.ckpt"
    manifest = export(ckpt, tmp / "out", int8=True)
    lm = LanguageModel.load_from_checkpoint(ckpt, weights_only=True).eval()
    return tmp / "out", lm, manifest, corpus


@pytest.mark.slow
def test_folder_is_self_contained_and_checked(exported):
    out, lm, manifest, _ = exported
    assert sorted(p.name for p in out.iterdir()) == [
        "craft_sampling.py",
        "manifest.json",
        "model.int8.onnx",
        "model.onnx",
        "run.py",
        "tokenizer.json",
    ]
    import onnxruntime as ort

    for name in ("model.onnx", "model.int8.onnx"):  # onnx.checker does not know onnxruntime's fused ops
        session = ort.InferenceSession(str(out / name), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == ["ids", "input_pos", "k_0", "v_0", "k_1", "v_1"]
        assert [o.name for o in session.get_outputs()] == ["logits", "k_0_out", "v_0_out", "k_1_out", "v_1_out"]
    m = json.loads((out / "manifest.json").read_text())
    assert m == manifest
    assert m["architecture"] == dataclasses.asdict(lm.config)  # written from the config, not field by field
    assert (m["architecture"]["block_size"], m["architecture"]["n_layers"], m["global_step"]) == (16, 2, 30)
    assert m["sampling"] == lm.sampling.as_dict() and SamplingConfig.of(m["sampling"]) == lm.sampling
    assert json.loads((out / "tokenizer.json").read_text()) == lm.tokenizer.state()


@pytest.mark.slow
def test_attention_is_one_fused_node_per_layer_on_the_cache_buffers(exported):
    """Each layer's attention is one GroupQueryAttention node that reads the layer's cache inputs
    and writes its cache outputs directly (so a runtime can bind one buffer to both), fed by the
    packed qkv projection: the split, the head reshapes and the concat around it are gone."""
    out, lm, manifest, _ = exported
    assert manifest["attention"] == "fused"
    for name in ("model.onnx", "model.int8.onnx"):
        graph = onnx.load(str(out / name)).graph
        ops = [n.op_type for n in graph.node]
        gqa = [n for n in graph.node if n.op_type == "GroupQueryAttention"]
        assert len(gqa) == lm.config.n_layers, name
        assert {(n.input[3], n.output[1]) for n in gqa} == {(f"k_{i}", f"k_{i}_out") for i in range(2)}
        assert not {"ScatterElements", "ScatterND", "Split", "Concat", "Transpose", "Softmax"} & set(ops), name
        assert "SkipLayerNormalization" in ops  # onnxruntime's fusions ran and were saved


def masked_export(tmp_path, **parts):
    """A model whose head size GroupQueryAttention cannot take (6) exports the plain traced ops."""
    from craft.export import can_fuse, check_parity, export_onnx
    from craft.model import GPT
    from craft.model.config import GPTConfig

    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=40, block_size=16, d_model=24, n_layers=2, n_head=4, d_hid=48, **parts))
    assert not can_fuse(gpt.config)
    export_onnx(gpt, tmp_path / "m.onnx", fused=False)
    check_parity(gpt, tmp_path / "m.onnx", atol=LOGITS_ATOL)
    return onnx.load(str(tmp_path / "m.onnx")).graph


@pytest.mark.slow  # an export with parity checks
def test_unfusable_head_size_writes_the_cache_with_one_scatter_each(tmp_path):
    """Each cache buffer is written by one ScatterElements along its slot axis; ScatterND (the default
    lowering of index_copy) would wrap every write in two transposes of the whole buffer."""
    graph = masked_export(tmp_path)
    ops = [n.op_type for n in graph.node]
    assert ops.count("ScatterElements") == 4 and "ScatterND" not in ops and "GroupQueryAttention" not in ops
    assert {n.input[0] for n in graph.node if n.op_type == "ScatterElements"} == {"k_0", "v_0", "k_1", "v_1"}


def test_the_recipe_exports_its_norms_and_rotary_as_fused_nodes(tmp_path):
    """The speedrun recipe's parameter-free RMSNorm and QK-norm export as onnxruntime's
    SimplifiedLayerNormalization nodes (its fusions match only the learned-scale norm's ops), rotary
    runs inside each GroupQueryAttention node (head size 16: the node rotates multiples of 16 only;
    smaller heads keep the traced rotation, as the next test's do), and no Transpose is left around
    QK-norm. Logits match
    PyTorch over a prefill and one-token steps to the end of the block, where rotary turns most."""
    import onnxruntime as ort

    from craft.export import buffer_names, export_onnx, save_ort_optimized
    from craft.model import GPT
    from craft.model.cache import KVCache
    from craft.model.config import GPTConfig

    torch.manual_seed(0)
    config = GPTConfig(vocab_size=40, block_size=16, d_model=64, n_layers=2, n_head=4, d_hid=48, **ALL_COMPONENTS)
    gpt = perturbed(GPT(config)).eval()
    export_onnx(gpt, tmp_path / "traced.onnx")
    save_ort_optimized(tmp_path / "traced.onnx", tmp_path / "m.onnx")  # as craft.export writes model.onnx
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    ops = [n.op_type for n in graph.node]
    norms = ops.count("SimplifiedLayerNormalization") + ops.count("SkipSimplifiedLayerNormalization")
    assert norms == 2 * 2 + 2 * 2 + 1  # two per block, QK-norm's two per layer, the final one
    assert not {"ReduceMean", "Sqrt", "Reciprocal"} & set(ops) and ops.count("Pow") == 2  # ReLU^2's, one per layer
    assert not {"Transpose", "GatherND", "Sin", "Cos"} & set(ops)
    gqa = [n for n in graph.node if n.op_type == "GroupQueryAttention"]
    assert len(gqa) == 2 and all(
        {a.name: a.i for a in n.attribute}.get("do_rotary") == 1 and len(n.input) == 9 for n in gqa
    )

    ids = torch.randint(0, 40, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = gpt(ids, all_logits=True)[0].numpy()
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    buffers = [b.numpy() for b in KVCache.empty(config, 1).buffers()]
    names = ["ids", "input_pos", *buffer_names(2)]
    got = []
    for start, end in [(0, 5), *((t, t + 1) for t in range(5, 16))]:
        feeds = dict(zip(names, [ids[:, start:end].numpy(), np.arange(start, end), *buffers], strict=True))
        logits, *buffers = session.run(None, feeds)
        got.append(logits)
    assert np.abs(np.concatenate(got, axis=1) - expected).max() <= LOGITS_ATOL


@pytest.mark.parametrize(
    "mlp, norm, components",
    [
        pytest.param("swiglu", "rmsnorm", {}, id="swiglu-rmsnorm"),
        pytest.param(
            "relu2", "rmsnorm_free", ALL_COMPONENTS, id="relu2-rmsnorm_free-all-components", marks=pytest.mark.slow
        ),
    ],
)
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "masked"])
def test_every_architecture_switch_exports_with_parity(tmp_path, fused, mlp, norm, components):
    """Rotary positions, SwiGLU and RMSNorm through both attention paths, and every component of
    craft/model/blocks.py at once: check_parity compares a prefill and one-token steps against
    PyTorch (it raises on a difference)."""
    from craft.export import check_parity, export_onnx
    from craft.model import GPT
    from craft.model.config import GPTConfig

    torch.manual_seed(0)
    d_model = 32 if fused else 24
    config = GPTConfig(
        vocab_size=40,
        block_size=16,
        d_model=d_model,
        n_layers=2,
        n_head=4,
        d_hid=48,
        **{**components, "positions": "rotary", "norm": norm, "mlp": mlp, "bias": False},
    )
    gpt = perturbed(GPT(config))
    export_onnx(gpt, tmp_path / "m.onnx", fused=fused)
    check_parity(gpt, tmp_path / "m.onnx", atol=LOGITS_ATOL)
    ops = {n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node}
    assert ("GroupQueryAttention" in ops) == fused


@pytest.mark.slow
def test_fp32_logits_match_pytorch_with_and_without_cache(exported):
    out, lm, _, _ = exported
    rt = ExportedModel(out)
    ids = torch.randint(0, lm.config.vocab_size, (2, 12))
    with torch.no_grad():
        full, _ = lm.model(ids, all_logits=True)  # (B, T, V)
    logits, cache = rt.step(ids[:, :8].numpy(), np.arange(8), rt.empty_cache(2))  # prefill
    np.testing.assert_allclose(logits, full[:, :8].numpy(), atol=LOGITS_ATOL, rtol=0)
    for t in range(8, 12):  # one token per call, reading and writing the cache
        logits, cache = rt.step(ids[:, t : t + 1].numpy(), np.array([t]), cache)
        np.testing.assert_allclose(logits[:, 0], full[:, t].numpy(), atol=LOGITS_ATOL, rtol=0)
    assert len(cache) == 2 * 2 and cache[0].shape == (2, 4, 16, 8)  # per layer k, v: (B, nh, block, hs)


@pytest.mark.slow
def test_greedy_generation_is_identical_in_both_runtimes(exported):
    out, lm, _, _ = exported
    rt = ExportedModel(out)
    for prompt in ("The king", "W"):
        # 60 new tokens with block_size 16: the window slides several times
        expected = lm.generate(prompt, max_new_tokens=60, temperature=0)
        assert rt.generate(prompt, max_new_tokens=60, temperature=0) == expected


def val_bpc(rt: ExportedModel, lm, corpus) -> float:
    ids = np.array(lm.tokenizer.encode(corpus.read_text()[-8000:]))
    block = 16
    nats = chars = 0.0
    for s in range(0, len(ids) - block - 1, block):
        x, y = ids[s : s + block][None], ids[s + 1 : s + block + 1]
        logits, _ = rt.step(x, np.arange(block), rt.empty_cache(1))
        z = logits[0] - logits[0].max(-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
        nats -= logp[np.arange(block), y].sum()
        chars += block  # char tokenizer: one character per token
    return nats / chars / math.log(2)


@pytest.mark.slow
def test_int8_is_smaller_and_close_in_bpc(exported):
    out, lm, manifest, corpus = exported
    fp32, int8 = ExportedModel(out), ExportedModel(out, int8=True)
    # A tiny model's file is mostly graph, not weights; the got_char figure is in benchmarks/.
    assert manifest["files"]["model.int8.onnx"] < 0.75 * manifest["files"]["model.onnx"]
    a, b = val_bpc(fp32, lm, corpus), val_bpc(int8, lm, corpus)
    assert abs(a - b) < INT8_BPC_BOUND, (a, b)
    assert 1.0 < a < 5.0


def without_torch(folder: Path) -> dict[str, str]:
    """An environment whose Python cannot import torch (a ``torch`` package that raises first on
    ``PYTHONPATH``), kept by every process it starts, ``python -m craft``'s allocator re-exec included."""
    shim = folder / "torch"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'torch' (blocked by the test)\")\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)])}


@pytest.mark.slow
@pytest.mark.parametrize("how", ["python -m craft run", "copied run.py"])
def test_runtime_works_where_torch_cannot_be_imported(exported, how, tmp_path):
    out, lm, _, _ = exported
    env = without_torch(tmp_path / "shim")
    probe = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True, env=env)
    assert probe.returncode != 0 and "blocked by the test" in probe.stderr  # the block works
    cmd = [sys.executable, "-m", "craft", "run", str(out)]
    if how == "copied run.py":
        cmd = [sys.executable, str(out / "run.py")]
    done = subprocess.run(
        [*cmd, "--prompt", "The king", "--max_new_tokens", "40", "--temperature", "0"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip("\n") == "The king" + lm.generate("The king", max_new_tokens=40, temperature=0)
    # No prompt: predict's default (a newline); the issue's own command line.
    done = subprocess.run([*cmd, "--max_new_tokens", "20"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout) == 1 + 20 + 1 and done.stdout.startswith("\n")  # char tokenizer: one char a token


@pytest.mark.slow
def test_a_damaged_folder_is_named_in_one_line(exported, tmp_path):
    out = exported[0]
    cases = {
        "manifest.json": ("{not json", "manifest.json is not valid JSON"),
        "tokenizer.json": ('{"type": "char"}', "a char tokenizer without its vocabulary"),
        "model.onnx": ("truncated", "model.onnx cannot be loaded by onnxruntime"),
    }
    for name, (text, message) in cases.items():
        folder = tmp_path / name
        shutil.copytree(out, folder)
        (folder / name).write_text(text)
        with pytest.raises(RunError, match=message) as e:
            ExportedModel(folder)
        assert "\n" not in str(e.value) and "export" in str(e.value)
    folder = tmp_path / "no-architecture"
    shutil.copytree(out, folder)
    m = json.loads((folder / "manifest.json").read_text())
    del m["architecture"]["n_head"]
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(RunError, match="manifest.json is damaged .*n_head"):
        ExportedModel(folder)


@pytest.mark.slow
def test_export_writes_beside_other_folders_without_touching_them(exported, tmp_path):
    """The temporary folder has a name of its own: a sibling named like one (the old export's
    fixed ``.NAME.tmp``) keeps its files, and a failed export leaves nothing behind."""
    source = Path(exported[2]["source_checkpoint"])
    keep = tmp_path / ".model.tmp"
    keep.mkdir()
    (keep / "mine.txt").write_text("not craft's")
    export(source, tmp_path / "model")
    assert (keep / "mine.txt").read_text() == "not craft's"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.tmp", "model"]


@pytest.mark.slow
def test_export_refuses_a_non_empty_folder_and_leaves_it_alone(exported, tmp_path):
    out, _, manifest, _ = exported
    before = (out / "model.onnx").read_bytes()
    with pytest.raises(CraftError, match="exists and is not empty"):
        export(Path(manifest["source_checkpoint"]), out)
    assert (out / "model.onnx").read_bytes() == before


def test_export_refuses_missing_corrupt_and_foreign_checkpoints(tmp_path):
    with pytest.raises(CraftError, match="checkpoint not found"):
        export(tmp_path / "nope.ckpt", tmp_path / "a")
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CraftError, match="cannot load checkpoint"):
        export(tmp_path / "bad.ckpt", tmp_path / "b")
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(CraftError, match="is not a craft checkpoint"):
        export(tmp_path / "foreign.ckpt", tmp_path / "c")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.ckpt", "foreign.ckpt"]  # nothing created


@pytest.mark.slow
def test_runtime_rejects_bad_settings_and_prompts(exported):
    out, _, _, _ = exported
    rt = ExportedModel(out)
    with pytest.raises(RunError, match=r"temperature must be >= 0.*top_p must be in \(0, 1\]"):
        rt.generate("The", temperature=-1, top_p=2)
    with pytest.raises(RunError, match="outside the model's vocabulary"):
        rt.generate("日本")
    with pytest.raises(RunError, match="not an exported craft model"):
        ExportedModel(out.parent)
