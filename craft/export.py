"""Export a checkpoint to a folder that runs without PyTorch (ONNX + numpy + onnxruntime), or to HF.

    python -m craft export --ckpt_path logs/got_char_1M_ctx256_bs64/checkpoints/last.ckpt --out export/got_char --int8
    python -m craft export --format hf --ckpt_path ... --out export/got_char_hf   (craft/hf.py)

The folder holds ``model.onnx`` (``GPT.forward`` with its KV cache, traced: one decoder step that
takes and returns the cache buffers, then optimized by onnxruntime's own graph fusions),
``model.int8.onnx`` with ``--int8`` (onnxruntime dynamic int8 quantization of the matmul weights),
``tokenizer.json``, ``manifest.json`` and ``run.py``: a copy of ``craft/runtime.py``, so
``python run.py --prompt "..."`` works on a machine that has only numpy and onnxruntime. With
``--web`` it also holds a static page (``index.html``, ``craft.js`` and onnxruntime-web) that
generates in a browser: ``craft/web/``.

Attention with the cache is onnxruntime's fused ``GroupQueryAttention`` node (``FusedCache``): it
writes the new keys and values and attends in one call, and when the runtime binds the same
buffer as a layer's cache input and output it writes in place, so a step moves no cache at all.
With rotary positions the same node also rotates the queries and keys (head sizes that are
multiples of 16; other sizes export the traced rotation). A head size that node
cannot take (not a multiple of 8) exports the plain traced ops instead. Parameter-free RMSNorm
(the norm and QK-norm of the speedrun recipe) exports as onnxruntime's one-node
``SimplifiedLayerNormalization`` (``fused_parts``); its fusions match the learned-scale norm only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn as nn

import craft
from craft.checkpoint import PART_FIELDS, option
from craft.errors import CraftError, OneLineParser, old_entry_point, run_verb
from craft.model import GPT
from craft.model.blocks import FreeRMSNorm, RotaryPositions
from craft.model.cache import KVCache
from craft.sampling import GREEDY_BELOW

OPSET = 18
# /2: the cache is one fixed-size key and value buffer per layer (inputs k_i, v_i; outputs k_i_out, v_i_out).
# /3: attention may be onnxruntime's fused node (manifest "attention": "fused"), which needs the
#     positions of one call to be consecutive, and to start at 0 when there is more than one.
FORMAT = "craft-onnx-decoder/4"
FUSED_HEAD_MULTIPLE = 8  # GroupQueryAttention's head sizes
ROTARY_HEAD_MULTIPLE = 16  # ... when it also rotates (do_rotary)


class FusedCache(KVCache):
    """A ``KVCache`` whose ``attend`` is one onnxruntime ``GroupQueryAttention`` node (for export only).

    The node takes the queries, keys and values packed as ``(B, T, 3C)`` (the layout of the qkv
    projection, so the split and reshapes before it cancel), the layer's ``(B, nh, block, hs)``
    buffers, and the filled length (``input_pos[-1] + 1``). It writes the new keys and values at the
    slots after the past ones and attends causally over the filled slots: the same as the masked
    attention of ``KVCache.attend`` when the positions of a call are consecutive (a prefill from 0,
    or one new token), which is how every craft runtime calls the graph.

    With ``rotary`` (the ``cos`` and ``sin`` tables of ``RotaryPositions``, ``(block, hs/2)`` each)
    the node also rotates the queries and keys it is given, at those same positions, in the
    half-split layout of ``RotaryPositions`` (``rotary_interleaved`` 0).
    """

    rotary: tuple[torch.Tensor, torch.Tensor] | None = None

    def attend(self, layer, input_pos, q, k, v, visible):
        B, nh, T, hs = q.shape
        packed = torch.cat([t.transpose(1, 2).reshape(B, T, nh * hs) for t in (q, k, v)], dim=-1)
        total = (input_pos[-1:] + 1).to(torch.int32)  # (1,): slots filled after this call
        keys, values = self.keys[layer], self.values[layer]
        inputs = (packed, None, None, keys, values, (total - 1).expand(B), total)
        attrs = {"num_heads": nh, "kv_num_heads": nh, "scale": 1.0 / math.sqrt(hs)}
        if self.rotary is not None:
            inputs, attrs = (*inputs, *self.rotary), {**attrs, "do_rotary": 1, "rotary_interleaved": 0}
        y, keys, values = torch.onnx.ops.symbolic_multi_out(
            "com.microsoft::GroupQueryAttention",
            inputs,
            attrs,
            dtypes=(q.dtype, keys.dtype, values.dtype),
            shapes=((B, T, nh * hs), keys.shape, values.shape),
            version=1,
        )
        self.keys[layer], self.values[layer] = keys, values
        return y.view(B, T, nh, hs).transpose(1, 2)


class ExportStep(nn.Module):
    """``(ids (B, T), input_pos (T,), k_0, v_0, k_1, ...) -> (logits (B, T, V), k_0, v_0, k_1, ...)``.

    ``GPT.forward`` with a cache made of the given per-layer buffers ``(B, n_head, block_size,
    head_size)``, traced as it is. An ONNX graph does not write its inputs, so the buffers come
    back as outputs with the T new keys and values written at ``input_pos`` (in place, where the
    fused node's runtime binds one buffer to both): the same graph does the prefill (positions
    ``0..T-1``) and each one-token step.
    """

    def __init__(self, gpt: GPT, fused: bool = True) -> None:
        super().__init__()
        self.gpt = gpt
        self.fused = fused

    def forward(self, ids: torch.Tensor, input_pos: torch.Tensor, *buffers: torch.Tensor):
        if self.fused:
            cache = FusedCache.from_buffers(list(buffers))
        else:
            cache = KVCache.from_buffers([b.clone() for b in buffers])
        with fused_parts(self.gpt, cache):
            logits, _ = self.gpt(ids, cache=cache, input_pos=input_pos, all_logits=True)
        return (logits, *cache.buffers())


def simplified_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last axis as onnxruntime's ``SimplifiedLayerNormalization`` node, scale 1
    (for export only): ``x / sqrt(mean(x^2) + eps)``, as ``nn.RMSNorm`` without a learned scale."""
    ones = torch.ones(x.size(-1), dtype=x.dtype)
    attrs = {"axis": -1, "epsilon": eps, "stash_type": 1}
    return torch.onnx.ops.symbolic("SimplifiedLayerNormalization", (x, ones), attrs, dtype=x.dtype, shape=x.shape)


@contextlib.contextmanager
def fused_parts(gpt: GPT, cache: KVCache):
    """Export-only stand-ins for parts that onnxruntime runs as one node but whose traced ops its
    fusions do not match: each parameter-free RMSNorm becomes one ``SimplifiedLayerNormalization``,
    and with the fused attention node rotary positions are left to that node (``FusedCache.rotary``;
    it rotates head sizes that are multiples of 16).
    Only the exact classes are replaced (a subclass may compute something else); ``check_parity``
    runs the graph against PyTorch either way."""
    replaced: list[tuple[nn.Module, str]] = []
    for m in gpt.modules():
        if type(m) is FreeRMSNorm:
            eps = m.eps if m.eps is not None else torch.finfo(torch.float32).eps
            m.forward = lambda x, eps=eps: simplified_norm(x, eps)
            replaced.append((m, "forward"))
    rotary = type(gpt.positions) is RotaryPositions and gpt.config.head_size % ROTARY_HEAD_MULTIPLE == 0
    if isinstance(cache, FusedCache) and rotary:
        cache.rotary = (gpt.positions.cos, gpt.positions.sin)
        gpt.positions.rotate = lambda q, k, pos: (q, k)
        replaced.append((gpt.positions, "rotate"))
    try:
        yield
    finally:
        for m, name in replaced:
            delattr(m, name)  # the instance attribute goes; the class's method is back


def can_fuse(config) -> bool:
    return config.head_size % FUSED_HEAD_MULTIPLE == 0


def buffer_names(n_layers: int, suffix: str = "") -> list[str]:
    return [f"{kind}_{i}{suffix}" for i in range(n_layers) for kind in ("k", "v")]


@contextlib.contextmanager
def quiet_logs(*names: str):
    """Silence library log chatter that is not about this model (e.g. "torchvision is not installed")."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def scatter_copy(self: torch.Tensor, dim: int, index: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """``index_copy`` as one ``scatter`` (for export only). onnxruntime's ScatterND writes along the
    leading axes, so the exporter wraps each cache write in two transposes of the whole buffer;
    ScatterElements writes along any axis (measured in benchmarks/README.md)."""
    shape = [1] * source.dim()
    shape[dim] = -1
    return self.scatter(dim, index.view(shape).expand_as(source), source)


def export_onnx(gpt: GPT, path: Path, fused: bool = True) -> None:
    """Trace one decoder step to ONNX, batch and new tokens dynamic, the cache buffers fixed-size;
    then fold away the reshapes that only undo each other (``drop_round_trips``) and apply
    onnxruntime's transformer fusions (``fuse``)."""
    gpt = gpt.eval()
    c = gpt.config
    ids = torch.zeros(2, 3, dtype=torch.long)  # sizes > 1: the exporter treats 0 and 1 as constants
    input_pos = torch.arange(3)
    buffers = KVCache.empty(c, 2).buffers()
    batch = torch.export.Dim("batch", min=1, max=4096)
    new = torch.export.Dim("new", min=1, max=c.block_size)
    shapes = {"ids": {0: batch, 1: new}, "input_pos": {0: new}, "buffers": tuple({0: batch} for _ in buffers)}
    with warnings.catch_warnings(), quiet_logs("torch.onnx"), torch.no_grad():
        warnings.simplefilter("ignore")
        step = ExportStep(gpt, fused=fused)
        exported = torch.export.export(step, (ids, input_pos, *buffers), dynamic_shapes=shapes)
        exported = exported.run_decompositions({torch.ops.aten.index_copy.default: scatter_copy})
        program = torch.onnx.export(
            exported,
            input_names=["ids", "input_pos", *buffer_names(c.n_layers)],
            output_names=["logits", *buffer_names(c.n_layers, "_out")],
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
    model = program.model_proto
    for node in model.graph.node:  # the exporter's per-node debug records (FX nodes, stack paths): 60% of a small file
        del node.metadata_props[:]
    drop_round_trips(model)
    model = fuse(model, c)
    onnx.save(model, str(path))  # onnx.checker does not know onnxruntime's fused ops: check_parity runs it


def value_shapes(model: onnx.ModelProto) -> dict[str, tuple]:
    """Each value's shape as the exporter recorded it, symbolic sizes by name (``s17``)."""
    g = model.graph
    return {
        v.name: tuple(d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim)
        for v in [*g.value_info, *g.input, *g.output]
        if v.type.tensor_type.HasField("shape")
    }


def drop_round_trips(model: onnx.ModelProto) -> int:
    """Remove what only undoes itself: a Reshape of a Reshape back to the first one's input shape
    (the view to heads and back around the fused attention), a Concat of a Split's outputs in
    order (the q, k, v split packed again), and a Transpose and its inverse around a norm over the
    last axis that both keep in place (QK-norm's heads-first layout and back). The exporter keeps
    them, with shapes it cannot prove equal at run time, and onnxruntime's optimizers leave them
    too; each is a node per layer per token. Returns how many values were replaced."""
    g = model.graph
    shapes = value_shapes(model)
    producer = {o: n for n in g.node for o in n.output}
    uses: dict[str, int] = {}
    for n in g.node:
        for name in n.input:
            uses[name] = uses.get(name, 0) + 1
    outputs = {o.name for o in g.output}
    same: dict[str, str] = {}  # value -> the earlier value it equals
    for n in g.node:  # in topological order, so a node's inputs are already resolved
        for i, name in enumerate(n.input):
            n.input[i] = same.get(name, name)
        if n.output[0] in outputs or not n.input:
            continue
        src = producer.get(n.input[0])
        if n.op_type == "Reshape" and src is not None and src.op_type == "Reshape":
            if shapes.get(src.input[0]) is not None and shapes.get(src.input[0]) == shapes.get(n.output[0]):
                same[n.output[0]] = src.input[0]
        elif n.op_type == "Concat" and src is not None and src.op_type == "Split":
            if list(n.input) == list(src.output) and _axis(n, shapes) == _axis(src, shapes):
                same[n.output[0]] = src.input[0]
        elif n.op_type == "Transpose" and src is not None and src.op_type == "SimplifiedLayerNormalization":
            pre = producer.get(src.input[0])
            if pre is None or pre.op_type != "Transpose" or uses.get(src.output[0]) != 1:
                continue
            perm, back = _perm(pre), _perm(n)
            last = len(perm) - 1
            if perm and back and perm[last] == last and _axis(src, shapes) == last:
                if [perm[i] for i in back] == list(range(len(perm))):
                    src.input[0] = pre.input[0]  # the norm now runs in the layout before both
                    same[n.output[0]] = src.output[0]
                    kept = [v for v in g.value_info if v.name != src.output[0]]  # its shape changed
                    del g.value_info[:]
                    g.value_info.extend(kept)
    live, needed = [], {o.name for o in g.output}
    for n in reversed(g.node):  # keep what the outputs still need
        if any(o in needed for o in n.output):
            live.append(n)
            needed.update(n.input)
    del g.node[:]
    g.node.extend(reversed(live))
    return len(same)


def _perm(node: onnx.NodeProto) -> list[int]:
    return next((list(a.ints) for a in node.attribute if a.name == "perm"), [])


def _axis(node: onnx.NodeProto, shapes: dict[str, tuple]) -> int | None:
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    rank = len(shapes.get(node.input[0], ()))
    return axis % rank if rank else None


def fuse(model: onnx.ModelProto, config) -> onnx.ModelProto:
    """onnxruntime's transformer fusions (``onnxruntime.transformers.optimizer``): a residual add
    and the norm after it become one SkipLayerNormalization (biases folded in), a bias add and GELU
    one BiasGelu, RMSNorm one SimplifiedLayerNormalization. GELU stays exact (no tanh approximation):
    greedy text must match PyTorch's."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("gpt2")
    options.enable_attention = False  # attention is already one fused node, or plain ops by choice
    with quiet_logs("onnxruntime.transformers", ""), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimized = optimize_model(
            model,
            model_type="gpt2",
            num_heads=config.n_head,
            hidden_size=config.d_model,
            opt_level=0,
            optimization_options=options,
        )
    model = optimized.model
    if not any(o.domain == "com.microsoft" for o in model.opset_import):  # the fused nodes' domain
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return model


def save_ort_optimized(src: Path, dst: Path) -> None:
    """onnxruntime's own graph optimizations up to the extended level (constant folding, fused
    int8 matmuls), saved so that loading does not redo them. Extended, not all: the all level adds
    layouts for this machine's CPU, and the file must run on any (a phone's browser too)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])


def check_parity(gpt: GPT, path: Path, atol: float = 1e-3) -> None:
    """Run the exported graph beside ``gpt`` (a prefill, then one-token steps at later positions) and
    refuse a graph that computes something else: a part can trace with a value frozen in."""
    import onnxruntime as ort

    c = gpt.config
    ids = torch.randint(0, c.vocab_size, (1, min(c.block_size, 8)), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, _ = gpt.eval()(ids, all_logits=True)  # (1, T, V)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = ["ids", "input_pos", *buffer_names(c.n_layers)]
    buffers = [b.numpy() for b in KVCache.empty(c, 1).buffers()]
    half = ids.size(1) // 2
    got = []
    for start, end in [(0, half), *((t, t + 1) for t in range(half, ids.size(1)))]:
        feeds = dict(zip(names, [ids[:, start:end].numpy(), np.arange(start, end), *buffers], strict=True))
        logits, *buffers = session.run(None, feeds)
        got.append(logits)
    worst = float(np.abs(np.concatenate(got, axis=1) - expected.numpy()).max())
    if not worst <= atol:
        raise CraftError(
            f"the exported graph computes different logits from PyTorch (largest difference {worst:.3g}); a part "
            "was probably traced with a value frozen in (a Python number read from a tensor), so nothing was written"
        )


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 quantization: weights of MatMul/Gemm stored as int8, activations quantized per call."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet_logs(""):  # the quantizer suggests shape pre-processing meant for vision models
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])


def draw_nodes(vocab: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """ONNX nodes that draw ``next_ids`` (1, 1) from ``logits`` (1, T, V) by the rule in
    ``craft/sampling.py``, with the ``uniforms[iteration]`` draw and the ``temperature``, ``top_k``
    and ``top_p`` inputs; and their constants. The page's loop runs them after each step."""
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper

    consts = {
        "loop_last": -1,
        "loop_last_1d": [-1],
        "loop_one": [1],
        "loop_max": [2**62],
        "loop_ninf": float("-inf"),
        "loop_greedy": GREEDY_BELOW,
        "loop_vocab": [vocab],
        "loop_axis1": 1,
        "loop_axes1": [1],
        "loop_zero": 0.0,
    }
    inits = [
        numpy_helper.from_array(np.array(v, dtype=np.float32 if isinstance(v, float) else np.int64), k)
        for k, v in consts.items()
    ]
    node = h.make_node
    nodes = [
        node("Gather", ["logits", "loop_last"], ["row"], axis=1),  # (1, V): the last position's logits
        node("ArgMax", ["row"], ["greedy_token"], axis=1, keepdims=1),
        node("ReduceMax", ["row"], ["row_max"], keepdims=1),
        node("Sub", ["row", "row_max"], ["z0"]),
        node("Div", ["z0", "temperature"], ["z1"]),
        node("TopK", ["z1", "top_k"], ["top_values", "top_indices"], axis=1),
        node("Gather", ["top_values", "loop_last"], ["kth"], axis=1),
        node("Less", ["z1", "kth"], ["below_k"]),
        node("Where", ["below_k", "loop_ninf", "z1"], ["z2"]),
        node("TopK", ["z2", "loop_vocab"], ["sorted", "order"], axis=1),  # all, largest first, ties by id
        node("Softmax", ["sorted"], ["sorted_p"], axis=1),
        node("CumSum", ["sorted_p", "loop_axis1"], ["mass_before"], exclusive=1),
        node("GreaterOrEqual", ["mass_before", "top_p"], ["beyond_p"]),  # the first token always stays
        node("Where", ["beyond_p", "loop_ninf", "sorted"], ["kept"]),
        node("Softmax", ["kept"], ["kept_p"], axis=1),
        node("CumSum", ["kept_p", "loop_axis1"], ["cdf"]),
        node("Gather", ["uniforms", "iteration"], ["u"]),
        node("LessOrEqual", ["cdf", "u"], ["below_u"]),
        node("Cast", ["below_u"], ["below_u_int"], to=T.INT64),
        node("ReduceSum", ["below_u_int", "loop_axes1"], ["past_u"], keepdims=1),  # the first cdf > u
        node("Greater", ["kept_p", "loop_zero"], ["possible"]),
        node("Cast", ["possible"], ["possible_int"], to=T.INT64),
        node("ReduceSum", ["possible_int", "loop_axes1"], ["n_possible"], keepdims=1),
        node("Sub", ["n_possible", "loop_one"], ["last_possible"]),
        node("Min", ["past_u", "last_possible"], ["rank"]),  # rounding left none past u: the last possible
        node("GatherElements", ["order", "rank"], ["sampled_token"], axis=1),
        node("Less", ["temperature", "loop_greedy"], ["greedy"]),
        node("Where", ["greedy", "greedy_token", "sampled_token"], ["next_ids"]),
    ]
    return nodes, inits


def write_loop(step_path: Path, out_path: Path, n_layers: int) -> None:
    """The decoder step of ``step_path`` inside an ONNX ``Loop`` that also samples, for the browser.

    onnxruntime-web copies every input into WASM memory and every output out of it on each call,
    so a call per token spends most of its time moving the cache (benchmarks/README.md). Here one
    call runs ``n`` steps: the first takes ``loop_ids`` ``(1, T)`` at positions ``loop_pos``
    (a prefill from 0, or one token after the filled slots), each later one the token just drawn;
    the cache stays inside onnxruntime between steps. Each step draws by ``draw_nodes`` with the
    page's seeded ``uniforms[i]``. Outputs: ``tokens`` ``(n, 1, 1)`` and the cache, ``k_0_next``, ...
    """
    from onnx import TensorProto as T
    from onnx import helper as h

    step = onnx.load(str(step_path))
    vocab = step.graph.output[0].type.tensor_type.shape.dim[-1].dim_value
    buffers = buffer_names(n_layers)
    node = h.make_node
    draw, inits = draw_nodes(vocab)
    draw += [
        node("Slice", ["input_pos", "loop_last_1d", "loop_max"], ["last_pos"]),
        node("Add", ["last_pos", "loop_one"], ["next_pos"]),
        node("Identity", ["cond"], ["cond_out"]),
        node("Identity", ["next_ids"], ["token"]),
    ]
    tensor = h.make_tensor_value_info
    body = h.make_graph(
        [*step.graph.node, *draw],
        "decode_step",
        [
            tensor("iteration", T.INT64, []),
            tensor("cond", T.BOOL, []),
            tensor("ids", T.INT64, [1, None]),
            tensor("input_pos", T.INT64, [None]),
            *(tensor(b, T.FLOAT, None) for b in buffers),
        ],
        [
            tensor("cond_out", T.BOOL, []),
            tensor("next_ids", T.INT64, [1, 1]),
            tensor("next_pos", T.INT64, [1]),
            *(tensor(f"{b}_out", T.FLOAT, None) for b in buffers),
            tensor("token", T.INT64, [1, 1]),
        ],
        [*step.graph.initializer, *inits],
        # The step's known shapes come along: without them onnxruntime-web 1.30 infers the fused
        # attention node's output from its packed q, k, v input (3C wide, not C) and refuses the graph.
        value_info=list(step.graph.value_info),
    )
    shape = [1, *(d.dim_value for d in step.graph.input[2].type.tensor_type.shape.dim[1:])]  # (1, nh, block, hs)
    loop = node(
        "Loop",
        ["n", "", "loop_ids", "loop_pos", *(f"loop_{b}" for b in buffers)],
        ["last_ids", "last_pos", *(f"{b}_next" for b in buffers), "tokens"],
        body=body,
    )
    graph = h.make_graph(
        [loop],
        "craft_generate",
        [
            tensor("n", T.INT64, []),
            tensor("loop_ids", T.INT64, [1, None]),
            tensor("loop_pos", T.INT64, [None]),
            *(tensor(f"loop_{b}", T.FLOAT, shape) for b in buffers),
            tensor("uniforms", T.FLOAT, [None]),
            tensor("temperature", T.FLOAT, []),
            tensor("top_k", T.INT64, [1]),
            tensor("top_p", T.FLOAT, []),
        ],
        [tensor("tokens", T.INT64, [None, 1, 1]), *(tensor(f"{b}_next", T.FLOAT, shape) for b in buffers)],
    )
    model = h.make_model(graph, opset_imports=list(step.opset_import))
    model.ir_version = step.ir_version
    onnx.save(model, str(out_path))


WEB = Path(__file__).with_name("web")
# onnxruntime-web's WASM-only build: the module, its loader and the SIMD binary (craft/web/package.json).
ORT_WEB_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")


def check_web(tokenizer_kind: str) -> Path:
    """Where onnxruntime-web's files are, or a ``CraftError`` saying what to do."""
    if tokenizer_kind != "char":
        raise CraftError(f"--web has the char tokenizer only; this model's is {tokenizer_kind} (export without --web)")
    dist = WEB / "node_modules" / "onnxruntime-web" / "dist"
    missing = [f for f in ORT_WEB_FILES if not (dist / f).is_file()]
    if missing:
        raise CraftError(
            f"--web needs onnxruntime-web, pinned in {WEB / 'package-lock.json'}: run `npm ci --prefix {WEB}` "
            f"(npm comes with Node.js); {dist} lacks {', '.join(missing)}"
        )
    return dist


def write_web(folder: Path, tokenizer_kind: str) -> list[str]:
    """Copy the page (``craft/web/index.html``, ``craft.js``) and onnxruntime-web into ``folder``."""
    dist = check_web(tokenizer_kind)
    for f in ("index.html", "craft.js"):
        shutil.copy(WEB / f, folder / f)
    for f in ORT_WEB_FILES:
        shutil.copy(dist / f, folder / f)
    return ["index.html", "craft.js", *ORT_WEB_FILES]


def export_hint(field: str, name: str) -> str:
    return f"pass {option(field)} {name} to craft export yourself to trust it"


def export(
    ckpt_path: Path,
    out: Path,
    int8: bool = False,
    trusted: dict[str, str | None] | None = None,
    format: str = "onnx",
    web: bool = False,
) -> dict[str, Any]:
    """Write ``out`` from ``ckpt_path``: the ONNX folder, or with ``format="hf"`` a ``transformers``
    model folder (``craft/hf.py``). ``trusted`` maps a part field (or ``tokenizer``) to the import
    path the user names for it: the checkpoint may use that class (``craft/checkpoint.py``)."""
    from craft.checkpoint import PART_FIELDS, read_checkpoint
    from craft.module import LanguageModel

    trusted = trusted or {}
    if format == "hf" and int8:
        raise CraftError("--int8 is for --format onnx; a transformers model quantizes on loading")
    checkpoint = read_checkpoint(ckpt_path, trusted, export_hint)  # weights_only, and no names imported
    if out.exists() and any(out.iterdir()):
        raise CraftError(f"{out} exists and is not empty; pick a new --out (nothing was overwritten)")
    if format == "hf":
        from craft.hf import target

        target(checkpoint["hyper_parameters"])  # refuse before building or writing anything
    named = {f: trusted[f] for f in PART_FIELDS if trusted.get(f)}
    lm = LanguageModel.load_from_checkpoint(
        ckpt_path, map_location="cpu", weights_only=True, tokenizer=trusted.get("tokenizer"), **named
    )
    if web:
        if format != "onnx":
            raise CraftError("--web is for --format onnx: the page runs the ONNX decoder")
        check_web(lm._require_tokenizer().kind)  # before the minute of tracing and optimizing
        if not can_fuse(lm.config):
            raise CraftError(
                f"--web needs the fused attention node, which takes head sizes that are multiples of "
                f"{FUSED_HEAD_MULTIPLE} (this model's is {lm.config.head_size}); export without --web"
            )
    # Write into a new temporary sibling and rename at the end: a failed export leaves nothing
    # behind, and no folder that was there before is touched.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    if format == "hf":
        from craft.hf import export_hf

        try:
            files = export_hf(lm.model, lm._require_tokenizer(), tmp)
            if out.exists():
                out.rmdir()  # empty, checked above
            tmp.replace(out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return {"format": "hf", "files": {f: (out / f).stat().st_size for f in files}}
    try:
        parts = ", ".join(f"{f} {getattr(lm.config, f)}" for f in PART_FIELDS)  # for error messages
        fused = can_fuse(lm.config)
        try:
            export_onnx(lm.model, tmp / "traced.onnx", fused=fused)
        except Exception as e:  # the exporter's own errors are pages long: give the first line
            first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
            raise CraftError(
                f"cannot export {ckpt_path}: torch.export could not trace GPT.forward with this model's parts "
                f"({parts}): {first[:300]}; a part named by import path must be traceable (positions as tensors, "
                "no Python values read from tensors)"
            ) from None
        save_ort_optimized(tmp / "traced.onnx", tmp / "model.onnx")
        try:
            check_parity(lm.model, tmp / "model.onnx")
        except CraftError as e:
            raise CraftError(f"cannot export {ckpt_path} ({parts}): {e}") from None
        files = ["model.onnx"]
        if int8:
            # Quantize the traced graph (its weights still plain initializers), then optimize: the
            # quantized matmuls fuse into one node each.
            quantize_int8(tmp / "traced.onnx", tmp / "traced.int8.onnx")
            save_ort_optimized(tmp / "traced.int8.onnx", tmp / "model.int8.onnx")
            files.append("model.int8.onnx")
        for f in ("traced.onnx", "traced.int8.onnx"):
            (tmp / f).unlink(missing_ok=True)
        tokenizer = lm._require_tokenizer()
        (tmp / "tokenizer.json").write_text(json.dumps(tokenizer.state(), ensure_ascii=False))
        shutil.copy(Path(__file__).with_name("runtime.py"), tmp / "run.py")
        shutil.copy(Path(__file__).with_name("sampling.py"), tmp / "craft_sampling.py")  # run.py's one import
        page = []
        if web:
            for f in files:  # the page's own graphs: the step inside a Loop
                write_loop(tmp / f, tmp / f.replace(".onnx", ".loop.onnx"), lm.config.n_layers)
                page.append(f.replace(".onnx", ".loop.onnx"))
            page += write_web(tmp, tokenizer.kind)
        manifest = {
            "format": FORMAT,
            "craft_version": craft.__version__,
            "torch_version": torch.__version__,
            "opset": OPSET,
            "source_checkpoint": str(ckpt_path),
            "source_sha256": hashlib.sha256(ckpt_path.read_bytes()).hexdigest(),
            "global_step": int(checkpoint.get("global_step", 0)),
            "files": {f: (tmp / f).stat().st_size for f in [*files, "tokenizer.json", *page]},
            # fused: GroupQueryAttention, in place when a buffer is bound as input and output
            "attention": "fused" if fused else "masked",
            "architecture": dataclasses.asdict(lm.config),
            "tokenizer": tokenizer.kind,
            "sampling": lm.sampling.as_dict(),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            out.rmdir()  # empty, checked above
        tmp.replace(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def main(argv: list[str] | None = None, prog: str = "python -m craft export") -> None:
    parser = OneLineParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", type=Path, required=True, help="a craft checkpoint (.ckpt)")
    parser.add_argument("--out", type=Path, required=True, help="folder to create (must not exist or be empty)")
    parser.add_argument(
        "--format",
        choices=("onnx", "hf"),
        default="onnx",
        help="onnx: a folder that runs without PyTorch (default); hf: a transformers model folder",
    )
    parser.add_argument("--int8", action="store_true", help="also write model.int8.onnx (dynamic int8 quantization)")
    parser.add_argument(
        "--web",
        action="store_true",
        help="also write a static page (index.html) that generates in a browser with onnxruntime-web",
    )
    fields = (*PART_FIELDS, "tokenizer")
    for field in fields:
        parser.add_argument(
            option(field), dest=field, metavar="IMPORT_PATH", help=f"trust this {field} class if the ckpt names it"
        )
    args = parser.parse_args(argv)
    trusted = {f: getattr(args, f) for f in fields}
    manifest = run_verb(lambda: export(args.ckpt_path, args.out, args.int8, trusted, args.format, web=args.web))
    sizes = ", ".join(
        f"{f} {n / 1e6:.2f} MB" if n > 1e5 else f"{f} {n / 1e3:.1f} kB" for f, n in manifest["files"].items()
    )
    print(f"craft: wrote {args.out} ({sizes})")
    if args.format == "hf":
        print(f"load it: AutoModelForCausalLM.from_pretrained({str(args.out)!r}) and AutoTokenizer, from transformers")
    else:
        print(f"run it: python -m craft run {args.out} --prompt 'The '  (or python {args.out}/run.py ...)")
        if args.web:
            print(f"in a browser: python -m http.server -d {args.out} 8000, then open http://localhost:8000/")


if __name__ == "__main__":
    old_entry_point("craft.export", "export")
    main()
