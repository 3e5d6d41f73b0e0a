"""onnxruntime's part: its transformer fusions, its graph optimizations saved into the file, the
parity check against PyTorch, and dynamic int8 quantization."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from craft.errors import CraftError
from craft.export.trace import buffer_names, quiet_logs
from craft.model import GPT
from craft.model.cache import KVCache


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
