"""TextDataModule: corpus -> tokenizer -> cached ids -> train/val split -> window batches."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from craft.data.corpus import corpus_files, read_corpus, write_builtin_corpus
from craft.data.tokenizers import CharTokenizer, Tokenizer
from craft.errors import ConfigError, CraftError

CACHE_FORMAT = 2  # 2: train and val encoded apart, split by characters


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
    """

    def __init__(
        self,
        num_starts: int,
        batch_size: int,
        batches_per_epoch: int,
        seed: int,
        progress: Callable[[], int] = lambda: 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.num_starts = num_starts
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
            starts = torch.randint(0, self.num_starts, (n,), generator=g)
            self._epoch_cache = (epoch, starts.view(self.batches_per_epoch, -1))
        return self._epoch_cache[1]

    def batch(self, epoch: int, index: int) -> list[int]:
        row = self.epoch_starts(epoch)[index]
        return row[self.rank * self.batch_size : (self.rank + 1) * self.batch_size].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        epoch, first = divmod(self.progress(), self.batches_per_epoch)
        for i in range(first, self.batches_per_epoch):
            yield self.batch(epoch, i)


class ResumableDataLoader(DataLoader):
    """A DataLoader Lightning treats as resumable; its state records what fixes the batch order."""

    def state_dict(self) -> dict[str, Any]:
        s = self.batch_sampler
        return {"seed": s.seed, "batch_size": s.batch_size, "batches_per_epoch": s.batches_per_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = self.state_dict()
        changed = {k: (v, mine[k]) for k, v in state.items() if mine.get(k) != v}
        if changed:
            detail = ", ".join(f"{k}: checkpoint {a} vs now {b}" for k, (a, b) in changed.items())
            raise CraftError(
                f"cannot resume exactly: the training batch order changed ({detail}); "
                "resume with the run's original data settings"
            )


class TextDataModule(L.LightningDataModule):
    def __init__(
        self,
        path: str | None = None,
        block_size: int = 256,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        seed: int = 1337,
        prompts: list[str] | None = None,
        builtin_corpus: str | None = None,
        tokenizer: Tokenizer | None = None,
        windows_per_epoch: int | None = None,
        cache_dir: str | None = None,
        num_workers: int = 0,
    ) -> None:
        """
        Args:
            path: UTF-8 text file, or a folder of .txt/.md/.rst files, to train on.
            block_size: Context length in tokens (linked to the model).
            batch_size: Windows per batch (per device).
            val_fraction: Share of the corpus, taken from its end, held out for validation.
            seed: Decides which windows form each batch (pure function of seed, epoch, batch index).
            prompts: Prompts for `predict`, one generated sample each.
            builtin_corpus: If set ("pydoc") and `path` does not exist, write that corpus to `path` first.
            tokenizer: Tokenizer to fit on the corpus (default: CharTokenizer).
            windows_per_epoch: Training windows per epoch (default: train tokens // block_size).
            cache_dir: Where encoded ids are cached (default: `.craft_cache` beside the corpus).
            num_workers: DataLoader worker processes (0 is fastest for in-memory windows on CPU).
        """
        super().__init__()
        problems = []
        if block_size < 1:
            problems.append(f"block_size must be positive, got {block_size}")
        if batch_size < 1:
            problems.append(f"batch_size must be positive, got {batch_size}")
        if not 0.0 < val_fraction < 1.0:
            problems.append(f"val_fraction must be in (0, 1), got {val_fraction}")
        if windows_per_epoch is not None and windows_per_epoch < 1:
            problems.append(f"windows_per_epoch must be positive, got {windows_per_epoch}")
        if problems:
            raise ConfigError("invalid data config: " + "; ".join(problems))
        self.path = Path(path) if path else None
        self.block_size = block_size
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.seed = seed
        self.prompts = prompts
        self.builtin_corpus = builtin_corpus
        self.tokenizer = tokenizer if tokenizer is not None else CharTokenizer()
        self.windows_per_epoch = windows_per_epoch
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.num_workers = num_workers
        self._ids: np.ndarray | None = None
        self._val_start = 0
        self.train_ids: np.ndarray | None = None
        self.val_ids: np.ndarray | None = None

    # -- corpus, tokenizer and cache ---------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Read by LightningCLI right after __init__ (argument link); prepares the vocab lazily."""
        if not self.tokenizer.is_fitted:
            self._load_or_build_cache()
        return self.tokenizer.vocab_size

    def _corpus_path(self) -> Path:
        if self.path is None:
            raise CraftError("no corpus given: set data.path (or use configs/quickstart.yaml)")
        if self.builtin_corpus and not self.path.exists():
            write_builtin_corpus(self.builtin_corpus, self.path)
        return self.path

    def _cache_key(self, files: list[Path]) -> str:
        h = hashlib.sha256()
        for f in files:
            h.update(str(f.name).encode())
            h.update(f.read_bytes())
        tok = self.tokenizer.state() if self.tokenizer.is_fitted else self.tokenizer.settings()
        key = {"tokenizer": tok, "val_fraction": self.val_fraction, "format": CACHE_FORMAT}
        h.update(json.dumps(key, sort_keys=True).encode())
        return h.hexdigest()[:16]

    def cache_folder(self) -> Path:
        path = self._corpus_path()
        files = corpus_files(path)
        root = self.cache_dir or (path.parent if path.is_file() else path) / ".craft_cache"
        return root / f"{path.stem}-{self._cache_key(files)}"

    def _load_or_build_cache(self) -> np.ndarray:
        if self._ids is not None:
            return self._ids
        folder = self.cache_folder()
        meta_file = folder / "meta.json"
        if not meta_file.exists():
            self._build_cache(folder)
        meta = json.loads(meta_file.read_text())
        if not self.tokenizer.is_fitted:
            self.tokenizer = Tokenizer.from_state(meta["tokenizer"])
        self._val_start = meta["val_start"]
        self._ids = np.memmap(folder / "ids.bin", dtype=meta["dtype"], mode="r", shape=(meta["num_tokens"],))
        return self._ids

    def _split_point(self, text: str) -> int:
        """Where validation text starts: the last ``val_fraction`` of the characters, moved back to
        a line start when one is near. Splitting characters (not tokens) gives every tokenizer the
        same validation text, so their val/bpc compare fairly."""
        cut = int(len(text) * (1 - self.val_fraction))
        line_start = text.rfind("\n", 0, cut) + 1
        return line_start if 0 < line_start and cut - line_start < 1000 else cut

    def _build_cache(self, folder: Path) -> None:
        text = read_corpus(self._corpus_path())
        tokenizer = self.tokenizer
        if not tokenizer.is_fitted:
            tokenizer.fit(text)
        cut = self._split_point(text)
        train, val = tokenizer.encode(text[:cut]), tokenizer.encode(text[cut:])  # apart: no token spans the cut
        dtype = np.uint16 if tokenizer.vocab_size < 2**16 else np.uint32
        ids = np.asarray(train + val, dtype=dtype)
        # Write into a private temp folder, then rename: a crash never leaves a half-written cache.
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        tmp.mkdir(exist_ok=True)
        ids.tofile(tmp / "ids.bin")
        meta = {
            "dtype": ids.dtype.name,
            "num_tokens": len(ids),
            "num_chars": len(text),
            "val_start": len(train),
            "val_start_char": cut,
            "tokenizer": tokenizer.state(),
        }
        (tmp / "meta.json").write_text(json.dumps(meta))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished first: its cache is identical
            for f in tmp.iterdir():
                f.unlink()
            tmp.rmdir()

    # -- Lightning hooks -----------------------------------------------------------------------

    def prepare_data(self) -> None:
        if self.trainer is None or self.trainer.state.fn != "predict":
            self._load_or_build_cache()

    def setup(self, stage: str) -> None:
        if stage == "predict":
            return
        ids = self._load_or_build_cache()
        # Contiguous split, validation from the end: no val text can leak into a train window.
        self.train_ids, self.val_ids = ids[: self._val_start], ids[self._val_start :]
        need = self.block_size + 1
        for name, part in (("train", self.train_ids), ("validation", self.val_ids)):
            if len(part) < need:
                raise CraftError(
                    f"the {name} split of {self.path} has {len(part)} tokens but block_size={self.block_size} "
                    f"needs at least {need}; use a longer corpus, a smaller block_size or another val_fraction"
                )

    def _progress(self) -> int:
        trainer = self.trainer
        if trainer is None:
            return 0
        return trainer.global_step * trainer.accumulate_grad_batches

    def train_dataloader(self) -> DataLoader:
        assert self.train_ids is not None
        dataset = WindowDataset(self.train_ids, self.block_size)
        trainer = self.trainer
        world_size = trainer.world_size if trainer else 1
        rank = trainer.global_rank if trainer else 0
        accumulate = trainer.accumulate_grad_batches if trainer else 1
        windows = self.windows_per_epoch or len(self.train_ids) // self.block_size
        batches = windows // (self.batch_size * world_size)
        batches -= batches % accumulate  # whole optimizer steps per epoch keep resume arithmetic exact
        if batches < 1:
            raise CraftError(
                f"one epoch has {windows} training windows, fewer than one batch of "
                f"{self.batch_size * world_size * accumulate}; lower batch_size or raise windows_per_epoch"
            )
        sampler = WindowBatchSampler(
            len(dataset), self.batch_size, batches, self.seed, self._progress, rank, world_size
        )
        return self._window_loader(dataset, sampler, ResumableDataLoader)

    def val_dataloader(self) -> DataLoader:
        assert self.val_ids is not None
        dataset = WindowDataset(self.val_ids, self.block_size)
        # Non-overlapping windows in order: every validation token is scored once.
        starts = list(range(0, len(dataset), self.block_size))
        batches = [starts[i : i + self.batch_size] for i in range(0, len(starts), self.batch_size)]
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:  # each process scores its share; metrics sum them
            batches = batches[trainer.global_rank :: trainer.world_size]
        return self._window_loader(dataset, batches)

    def _window_loader(self, dataset: WindowDataset, batch_sampler, loader_class: type = DataLoader) -> DataLoader:
        return loader_class(
            dataset,
            batch_sampler=batch_sampler,
            collate_fn=collate_windows,
            num_workers=self.num_workers,
            generator=own_generator(),
        )

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        # Default: start from a newline, or the first symbol if this vocabulary has none.
        vocab = getattr(self.tokenizer, "vocab", None) or ["\n"]
        prompts = self.prompts or ["\n" if "\n" in vocab else vocab[0]]
        return DataLoader(prompts, batch_size=1, collate_fn=collate_prompts)
