"""Val bpc of a model on held-out windows, in PyTorch and through the torch-free runtime: the
figure export is judged by (``benchmarks/export_runtime.py``, ``craft.compare``'s int8 column)."""

from __future__ import annotations

import math

import numpy as np


def val_windows(val_ids: np.ndarray, block: int, n: int | None = None) -> np.ndarray:
    """The first ``n`` (default all) consecutive windows of ``block + 1`` tokens, ``(n, block + 1)``."""
    n = min(n or len(val_ids), (len(val_ids) - 1) // block)
    return np.stack([val_ids[i * block : i * block + block + 1] for i in range(n)])


def bpc_torch(lm, windows: np.ndarray, char_lengths: np.ndarray) -> float:
    import torch

    x, y = torch.from_numpy(windows[:, :-1]), torch.from_numpy(windows[:, 1:])
    with torch.no_grad():
        logits, _ = lm.model(x, all_logits=True)
        nats = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
    return nats / char_lengths[windows[:, 1:]].sum() / math.log(2)


def bpc_onnx(rt, windows: np.ndarray, char_lengths: np.ndarray) -> float:
    """``rt``: a ``craft.runtime.ExportedModel``; each window is one prefill of the exported graph."""
    nats = 0.0
    for w in windows:
        logits, _ = rt.step(w[None, :-1], np.arange(len(w) - 1), rt.empty_cache(1))
        z = logits[0].astype(np.float64)
        z -= z.max(-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
        nats -= logp[np.arange(len(w) - 1), w[1:]].sum()
    return nats / char_lengths[windows[:, 1:]].sum() / math.log(2)
