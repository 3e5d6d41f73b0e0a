"""The windows of token ids a data module serves: datasets over the cached ids, the resumable
batch order of training (a pure function of seed, epoch and batch index), and the collate
functions."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from craft.errors import CraftError


class WindowDataset(Dataset):
    """Windows of ``block_size + 1`` tokens; index = start offset. Returns ``(x, y)`` shifted by one."""

    def __init__(self, ids: np.ndarray, block_size: int) -> None:
        self.ids = ids
        self.block_size = block_size
        self._offsets = np.arange(block_size + 1)

    def __len__(self) -> int:
        return len(self.ids) - self.block_size

    def __getitem__(self, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.__getitems__([start])
        return x[0], y[0]

    def __getitems__(self, starts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        # One fancy-index gather for the whole batch: (B, T + 1)
        window = torch.from_numpy(self.ids[np.asarray(starts)[:, None] + self._offsets].astype(np.int64))
        return window[:, :-1], window[:, 1:]


class SourceWindows(WindowDataset):
    """Validation windows of a mixture: ``(x, y, source)``, source the index of each window's corpus."""

    def __init__(self, ids: np.ndarray, block_size: int, firsts: list[int]) -> None:
        super().__init__(ids, block_size)
        self.firsts = np.asarray(firsts)

    def __getitems__(self, starts: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y = super().__getitems__(starts)
        source = torch.from_numpy(np.searchsorted(self.firsts, np.asarray(starts), side="right") - 1)
        return x, y, source


def own_generator() -> torch.Generator:
    """Each new DataLoader iterator draws a seed from its generator; without one it draws from the
    global RNG, so an extra validation (or a resume) would shift dropout masks. Ours never do."""
    return torch.Generator().manual_seed(0)


def collate_windows(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``WindowDataset.__getitems__`` already returns the stacked batch."""
    return batch


def collate_prompts(batch: list[str]) -> list[str]:
    return list(batch)


class WindowBatchSampler(Sampler[list[int]]):
    """Random training windows where batch ``i`` of epoch ``e`` is a pure function of ``(seed, e, i)``.

    Where to start is read from ``progress()`` (batches already consumed, derived from the
    trainer's restored global step), so a resumed run continues with exactly the batch an
    uninterrupted run would have drawn next, instead of replaying the epoch from its start.
    Under data parallelism each rank takes its own slice of every global batch.

    A mixture gives ``num_starts`` per source, the ``offsets`` of each source's first start and
    their ``weights``: each window draws its source by weight, then its start in that source.
    """

    def __init__(
        self,
        num_starts: int | list[int],
        batch_size: int,
        batches_per_epoch: int,
        seed: int,
        progress: Callable[[], int] = lambda: 0,
        rank: int = 0,
        world_size: int = 1,
        offsets: list[int] | None = None,
        weights: list[float] | None = None,
    ) -> None:
        self.num_starts = num_starts
        self.offsets = offsets
        self.weights = weights
        self.batch_size = batch_size
        self.batches_per_epoch = batches_per_epoch
        self.seed = seed
        self.progress = progress
        self.rank = rank
        self.world_size = world_size
        self._epoch_cache: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return self.batches_per_epoch

    def epoch_starts(self, epoch: int) -> torch.Tensor:
        """All window starts of one epoch, ``(batches_per_epoch, world_size * batch_size)``."""
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            n = self.batches_per_epoch * self.world_size * self.batch_size
            if isinstance(self.num_starts, int):
                starts = torch.randint(0, self.num_starts, (n,), generator=g)
            else:
                source = torch.multinomial(torch.tensor(self.weights, dtype=torch.float64), n, True, generator=g)
                within = torch.rand(n, generator=g, dtype=torch.float64) * torch.tensor(self.num_starts)[source]
                starts = torch.tensor(self.offsets or [0] * len(self.num_starts))[source] + within.long()
            self._epoch_cache = (epoch, starts.view(self.batches_per_epoch, -1))
        return self._epoch_cache[1]

    def batch(self, epoch: int, index: int) -> list[int]:
        row = self.epoch_starts(epoch)[index]
        return row[self.rank * self.batch_size : (self.rank + 1) * self.batch_size].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        epoch, first = divmod(self.progress(), self.batches_per_epoch)
        for i in range(first, self.batches_per_epoch):
            yield self.batch(epoch, i)


def check_batch_order(saved: dict[str, Any], now: dict[str, Any]) -> None:
    """Refuse a resume whose training batch order differs from the checkpoint's (``saved``): the
    rest of the run would train on other windows than the interrupted one, not resume it."""
    changed = {k: (v, now.get(k)) for k, v in saved.items() if now.get(k) != v}
    if changed:
        detail = ", ".join(f"{k}: checkpoint {a} vs now {b}" for k, (a, b) in changed.items())
        raise CraftError(
            f"cannot resume exactly: the training batch order changed ({detail}); resume with the run's "
            "original data settings, or start a new run from its weights with --init_from (nothing was changed)"
        )


class ResumableDataLoader(DataLoader):
    """A DataLoader Lightning treats as resumable; its state records what fixes the batch order."""

    def state_dict(self) -> dict[str, Any]:
        s = self.batch_sampler
        state = {"seed": s.seed, "batch_size": s.batch_size, "batches_per_epoch": s.batches_per_epoch}
        if s.weights is not None:
            state["weights"] = list(s.weights)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_batch_order(state, self.state_dict())
