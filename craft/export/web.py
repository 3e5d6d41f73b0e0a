"""The ``--web`` page: the decoder step inside an ONNX ``Loop`` that also samples (``write_loop``,
drawing with ``draw_nodes``), and the page's files (``craft/web/``: ``index.html``, ``craft.js``
and onnxruntime-web, pinned in its ``package-lock.json``).

The loop graph is built with ``onnx.helper``, the ONNX project's own builder: its body is the
traced step's nodes as they are plus the drawing nodes, which onnxscript's builder would have to
re-declare as a function around an existing graph for no gain."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx

from craft.errors import CraftError
from craft.export.trace import buffer_names
from craft.sampling import GREEDY_BELOW

WEB = Path(__file__).parents[1] / "web"
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
