"""KVCache: the keys and values of one generation call (litgpt's preallocated buffers, nanochat's
per-call object).

One ``(B, n_head, block_size, head_size)`` key buffer and one value buffer per layer, allocated
once per ``generate`` call and written in place at the positions being computed
(``index_copy_``). Attention then reads all ``block_size`` slots, masked to the positions written
so far: the shapes never change, so the same forward runs eagerly, compiled ahead of time
(``craft/generate/compiled.py``) and exported to ONNX (``craft/export/trace.py``). The cache is never stored on
the module.

One buffer per layer, not one stacked tensor: an in-place write into a slice of a stacked graph
input is functionalised by ``torch.export`` into a copy of the whole stack (measured: most of the
compiled step's time; benchmarks/README.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from craft.model.config import GPTConfig


class KVCache:
    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        self.keys, self.values = keys, values

    @classmethod
    def empty(
        cls, config: GPTConfig, batch_size: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> KVCache:
        shape = (batch_size, config.n_head, config.block_size, config.head_size)
        zeros = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(2 * config.n_layers)]
        return cls(zeros[0::2], zeros[1::2])

    @classmethod
    def from_buffers(cls, buffers: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> KVCache:
        """From ``k_0, v_0, k_1, v_1, ...`` (the inputs of a compiled or exported step)."""
        return cls(list(buffers[0::2]), list(buffers[1::2]))

    def buffers(self) -> list[torch.Tensor]:
        """``k_0, v_0, k_1, v_1, ...``."""
        return [t for kv in zip(self.keys, self.values, strict=True) for t in kv]

    @property
    def batch_size(self) -> int:
        return self.keys[0].size(0)

    def write(
        self, layer: int, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``k``, ``v`` ``(B, nh, T, hs)`` at slots ``input_pos`` ``(T,)``; return the layer's buffers."""
        keys, values = self.keys[layer], self.values[layer]
        keys.index_copy_(2, input_pos, k.to(keys.dtype))
        values.index_copy_(2, input_pos, v.to(values.dtype))
        return keys, values

    def attend(
        self,
        layer: int,
        input_pos: torch.Tensor,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        visible: torch.Tensor,
    ) -> torch.Tensor:
        """Write ``k``, ``v`` at ``input_pos``, then attend ``q`` ``(B, nh, T, hs)`` over every slot up
        to each query's own position (``visible``, the additive ``(T, block_size)`` mask); returns
        ``(B, nh, T, hs)``. ``craft/export/trace.py`` overrides this one method to emit onnxruntime's
        fused attention, which does both in one node."""
        keys, values = self.write(layer, input_pos, k, v)  # (B, nh, block, hs) each
        if keys.dtype != q.dtype:  # under autocast
            keys, values, visible = keys.to(q.dtype), values.to(q.dtype), visible.to(q.dtype)
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=visible)
