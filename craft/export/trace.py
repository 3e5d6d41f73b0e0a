"""Tracing: ``GPT.forward`` with its KV cache, one decoder step, to ONNX through ``torch.export``.

Export-only stand-ins are put in for the trace and taken out after it (``fused_parts``): attention
with the cache as onnxruntime's fused ``GroupQueryAttention`` node (``FusedCache``), which writes
the new keys and values and attends in one call (and, for rotary head sizes that are multiples of
16, rotates too); parameter-free RMSNorm as one ``SimplifiedLayerNormalization`` node, since
onnxruntime's fusions match the learned-scale norm only. ``index_copy`` is decomposed into one
``scatter`` (``scatter_copy``). The traced graph then goes through ``rewrite.py`` and onnxruntime's
transformer fusions (``optimize.py``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from pathlib import Path

import onnx
import torch
import torch.nn as nn

from craft.model import GPT
from craft.model.blocks import FreeRMSNorm, RotaryPositions
from craft.model.cache import KVCache

OPSET = 18
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
    """Trace one decoder step to ONNX (``trace``); then fold away the reshapes that only undo each
    other (``drop_round_trips``) and apply onnxruntime's transformer fusions (``fuse``)."""
    from craft.export.optimize import fuse
    from craft.export.rewrite import drop_round_trips

    model = trace(gpt, fused)
    drop_round_trips(model)
    model = fuse(model, gpt.config)
    onnx.save(model, str(path))  # onnx.checker does not know onnxruntime's fused ops: check_parity runs it


def trace(gpt: GPT, fused: bool = True) -> onnx.ModelProto:
    """The exporter's graph of one decoder step, before any pass: batch and new tokens dynamic, the
    cache buffers fixed-size."""
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
    return model
