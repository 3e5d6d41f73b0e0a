"""TextDataModule: corpus -> tokenizer -> cached ids -> train/val split -> window batches."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from craft.data.corpus import corpus_files, fingerprint, write_builtin_corpus
from craft.data.prepare import CACHE_FORMAT, Prepared, Split, check, prepare
from craft.data.tokenizers import CharTokenizer, Tokenizer
from craft.data.windows import (
    ResumableDataLoader,
    SourceWindows,
    WindowBatchSampler,
    WindowDataset,
    check_batch_order,
    collate_prompts,
    collate_windows,
    own_generator,
)
from craft.errors import ConfigError, CraftError, CraftWarning


@dataclass
class Source:
    """One corpus of a mixture: its path(s) (as ``data.path``), its share of the training windows
    (weights are normalised) and the name its validation figures are logged under."""

    path: str | list[str]
    weight: float = 1.0
    name: str | None = None


class TextDataModule(L.LightningDataModule):
    def __init__(
        self,
        path: str | list[str] | None = None,
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
        sources: list[Source] | None = None,
        val_chars: int | None = None,
        test_fraction: float = 0.0,
        text_field: str = "text",
        separator: str = "\n",
        chunk_chars: int = 1 << 20,
    ) -> None:
        """
        Args:
            path: The corpus: a file, a folder (recursive), a glob, or a list of them. Text files
                (.txt/.md/.rst, or .gz of them) are one document each; .jsonl (or .jsonl.gz) has a
                document per line and .parquet one per row, under `text_field`.
            block_size: Context length in tokens (linked to the model).
            batch_size: Windows per batch (per device).
            val_fraction: Share of each corpus's characters, from its end, held out for validation.
            seed: Decides which windows form each batch (pure function of seed, epoch, batch index).
            prompts: Prompts for `predict`, one generated sample each.
            builtin_corpus: If set ("pydoc": Python's reference prose; "stdlib": its standard
                library's source) and `path` does not exist, write that corpus there first.
            tokenizer: Tokenizer to fit on the corpus (default: CharTokenizer).
            windows_per_epoch: Training windows per epoch (default: train tokens // block_size).
            cache_dir: Where encoded ids are cached (default: `.craft_cache` beside the corpus).
            num_workers: DataLoader worker processes (0 is fastest for in-memory windows on CPU).
            sources: Instead of `path`, a mixture: `[{path, weight, name}, ...]`. Training windows
                come from each source in proportion to its weight; validation reports each source's
                val/loss and val/bpc beside the figures over all of them.
            val_chars: Hold out this many characters of each corpus (its end) instead of `val_fraction`.
            test_fraction: Share of each corpus's characters, from its very end, held out as the test
                split that `craft test` scores (validation is then the text just before it). 0: none.
                Set it when training starts: a checkpoint is only tested on text it never saw.
            text_field: The text's field in .jsonl records, its column in .parquet files.
            separator: Put between consecutive documents (and files).
            chunk_chars: Characters prepared at a time (memory, not results: the ids are the same).
        """
        super().__init__()
        problems = []
        if block_size < 1:
            problems.append(f"block_size must be positive, got {block_size}")
        if batch_size < 1:
            problems.append(f"batch_size must be positive, got {batch_size}")
        if not 0.0 < val_fraction < 1.0:
            problems.append(f"val_fraction must be in (0, 1), got {val_fraction}")
        held_out = test_fraction + (0.0 if val_chars or not 0.0 < val_fraction < 1.0 else val_fraction)
        if not 0.0 <= test_fraction < 1.0 or held_out >= 1.0:
            problems.append(f"test_fraction must be in [0, 1) and leave room for training, got {test_fraction}")
        if val_chars is not None and val_chars < 1:
            problems.append(f"val_chars must be positive (or null to use val_fraction), got {val_chars}")
        if windows_per_epoch is not None and windows_per_epoch < 1:
            problems.append(f"windows_per_epoch must be positive, got {windows_per_epoch}")
        if chunk_chars < 1:
            problems.append(f"chunk_chars must be positive, got {chunk_chars}")
        if sources is not None and path is not None:
            problems.append("give data.path or data.sources, not both")
        if sources is not None and not sources:
            problems.append("data.sources is empty")
        for i, src in enumerate(sources or []):
            weight = src.weight if isinstance(src, Source) else src.get("weight", 1.0)
            if not (isinstance(weight, (int, float)) and 0 < weight < math.inf):
                problems.append(f"sources[{i}].weight must be a positive finite number, got {weight}")
        if num_workers < 0:
            problems.append(f"num_workers must be >= 0, got {num_workers}")
        if isinstance(path, list) and not path:
            problems.append("data.path is an empty list: give a file, a folder, a glob, or a list of them")
        if problems:
            raise ConfigError("invalid data config: " + "; ".join(problems))
        self.path = Path(path) if isinstance(path, str) else path
        self.sources = None if sources is None else [s if isinstance(s, Source) else Source(**s) for s in sources]
        self.block_size = block_size
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.val_chars = val_chars
        self.test_fraction = test_fraction
        self.seed = seed
        self.prompts = prompts
        self.builtin_corpus = builtin_corpus
        self.tokenizer = tokenizer if tokenizer is not None else CharTokenizer()
        self.windows_per_epoch = windows_per_epoch
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.num_workers = num_workers
        self.text_field = text_field
        self.separator = separator
        self.chunk_chars = chunk_chars
        self._ids: np.ndarray | None = None
        self._meta: dict | None = None
        self.train_ids: np.ndarray | None = None
        self.val_ids: np.ndarray | None = None

    # -- corpus, tokenizer and cache ---------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """The fitted tokenizer's vocabulary size (``prepare_vocab`` first fits it from the corpus)."""
        if not self.tokenizer.is_fitted:
            raise CraftError("the vocabulary is not known before the corpus is prepared: call prepare_vocab()")
        return self.tokenizer.vocab_size

    def prepare_vocab(self) -> int:
        """Prepare the corpus (or find it prepared) and return the vocabulary size: what
        LightningCLI links into ``model.vocab_size`` right after building the data module."""
        if not self.tokenizer.is_fitted:
            self._load_or_build_cache()
        return self.tokenizer.vocab_size

    def _source_specs(self) -> list[Source]:
        if self.sources is not None:
            return list(self.sources)
        if self.path is None:
            raise CraftError("no corpus given: set data.path (or use configs/quickstart.yaml)")
        return [Source(path=[str(self.path)] if isinstance(self.path, Path) else list(self.path))]

    @property
    def source_names(self) -> list[str]:
        """Each source's name, as its validation figures are logged (``val/bpc/<name>``)."""
        names = []
        for spec in self._source_specs():
            first = spec.path if isinstance(spec.path, str) else spec.path[0]
            name = spec.name or Path(first.split("*")[0].rstrip("/") or "corpus").stem.split(".")[0] or "corpus"
            names.append(re.sub(r"[^A-Za-z0-9_.-]+", "_", name))
        if len(set(names)) != len(names):
            raise ConfigError(f"data.sources have the same name twice ({names}); give each a name")
        return names

    def _prepared(self) -> list[Prepared]:
        return [
            Prepared(name, corpus_files(spec.path))
            for name, spec in zip(self.source_names, self._source_specs(), strict=True)
        ]

    def _cache_key(self, sources: list[Prepared]) -> str:
        """From what names the corpus (paths, sizes, modification times) and what shapes its ids;
        nothing is read, so finding a prepared corpus of any size is instant. The content hash is
        computed once, at preparation, and kept in the cache's metadata."""
        tok = self.tokenizer.state() if self.tokenizer.is_fitted else self.tokenizer.settings()
        key = {
            "format": CACHE_FORMAT,
            "sources": [fingerprint(s.files) for s in sources],
            "tokenizer": tok,
            "val": [self.val_fraction, self.val_chars],
            **({"test": self.test_fraction} if self.test_fraction else {}),  # keys without one stay as they were
            "documents": [self.text_field, self.separator],
            "chunk_chars": self.chunk_chars,
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    def cache_folder(self, sources: list[Prepared] | None = None) -> Path:
        sources = sources or self._prepared()
        specs = self._source_specs()
        first = Path(specs[0].path if isinstance(specs[0].path, str) else specs[0].path[0])
        if self.cache_dir:
            root = self.cache_dir
        elif first.is_dir():
            root = first / ".craft_cache"
        else:
            root = first.parent / ".craft_cache"
        stem = sources[0].name if len(sources) == 1 else "mixture"
        return root / f"{stem}-{self._cache_key(sources)}"

    def _load_or_build_cache(self) -> np.ndarray:
        if self._ids is not None:
            return self._ids
        if self.builtin_corpus and isinstance(self.path, Path) and not self.path.exists():
            write_builtin_corpus(self.builtin_corpus, self.path)  # the one place a corpus is written
        sources = self._prepared()
        folder = self.cache_folder(sources)
        if folder.exists():
            problem = check(folder)
            if problem:
                warnings.warn(
                    f"the prepared corpus at {folder} is damaged ({problem}); preparing it again",
                    CraftWarning,
                    stacklevel=2,
                )
                shutil.rmtree(folder)
        if not folder.exists():
            split = Split(self.val_fraction, self.val_chars, self.test_fraction)
            prepare(folder, sources, self.tokenizer, split, self.separator, self.text_field, self.chunk_chars)
        meta = json.loads((folder / "meta.json").read_text())
        if not self.tokenizer.is_fitted:
            self.tokenizer = Tokenizer.from_state(meta["tokenizer"])
        self._meta = meta
        self._ids = np.memmap(folder / "ids.bin", dtype=meta["dtype"], mode="r", shape=(meta["num_tokens"],))
        return self._ids

    # -- Lightning hooks -----------------------------------------------------------------------

    def prepare_data(self) -> None:
        if self.trainer is None or self.trainer.state.fn != "predict":
            self._load_or_build_cache()

    def setup(self, stage: str) -> None:
        if stage == "predict":
            return
        ids = self._load_or_build_cache()
        # Contiguous splits, validation from each corpus's end: no val text can leak into a train window.
        self.train_parts = [ids[a:b] for a, b in (s["train"] for s in self._meta["sources"])]
        self.val_parts = [ids[a:b] for a, b in (s["val"] for s in self._meta["sources"])]
        self.test_parts = [ids[a:b] for a, b in (s["test"] for s in self._meta["sources"] if "test" in s)]
        self.train_ids, self.val_ids = self.train_parts[0], self.val_parts[0]
        if stage == "test" and not self.test_parts:
            raise CraftError(
                "this data has no test split: train with --data.test_fraction (e.g. 0.05) to hold one out "
                "from the start, then test that checkpoint with the same setting"
            )
        need = self.block_size + 1
        checked = [("train", self.train_parts), ("validation", self.val_parts), ("test", self.test_parts)]
        for name, parts in (c for c in checked if c[1]):
            for source, part in zip(self.source_names, parts, strict=True):
                if len(part) < need:
                    which = self.path if self.sources is None else f"source {source}"
                    raise CraftError(
                        f"the {name} split of {which} has {len(part)} tokens but block_size={self.block_size} "
                        f"needs at least {need}; use a longer corpus, a smaller block_size or another val_fraction"
                    )

    def _progress(self) -> int:
        trainer = self.trainer
        if trainer is None:
            return 0
        return trainer.global_step * trainer.accumulate_grad_batches

    def _batches_per_epoch(self, trainer: L.Trainer | None = None) -> int:
        trainer = trainer or self.trainer
        world_size = trainer.world_size if trainer else 1
        accumulate = trainer.accumulate_grad_batches if trainer else 1
        train_tokens = sum(len(p) for p in self.train_parts)
        windows = self.windows_per_epoch or train_tokens // self.block_size
        batches = windows // (self.batch_size * world_size)
        batches -= batches % accumulate  # whole optimizer steps per epoch keep resume arithmetic exact
        if batches < 1:
            raise CraftError(
                f"one epoch has {windows} training windows, fewer than one batch of "
                f"{self.batch_size * world_size * accumulate}; lower batch_size or raise windows_per_epoch"
            )
        return batches

    def batch_order(self, trainer: L.Trainer | None = None) -> dict[str, Any]:
        """What fixes the training batch order (after ``setup``; ``trainer`` is the one that will
        train, when it is not attached yet): saved in every checkpoint, and checked on resume
        whatever point of an epoch the checkpoint was written at."""
        order: dict[str, Any] = {
            "seed": self.seed,
            "batch_size": self.batch_size,
            "batches_per_epoch": self._batches_per_epoch(trainer),
        }
        if len(self.train_parts) > 1:
            order["weights"] = self._mixture_weights()
        return order

    def _mixture_weights(self) -> list[float]:
        specs = self._source_specs()
        total = sum(spec.weight for spec in specs)
        return [spec.weight / total for spec in specs]

    def state_dict(self) -> dict[str, Any]:
        if self.train_ids is None:
            return {}
        return {"batch_order": self.batch_order(), "test_fraction": self.test_fraction}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Lightning calls this on resume and before a test, after ``setup`` and before any record of
        the run is written."""
        stage = self.trainer.state.fn if self.trainer is not None else None
        if "batch_order" in state and self.train_ids is not None and stage == "fit":
            check_batch_order(state["batch_order"], self.batch_order())
        trained = state.get("test_fraction", 0.0)  # absent: trained before there were test splits
        if stage == "test" and trained != self.test_fraction:
            raise CraftError(
                f"this checkpoint was trained with data.test_fraction {trained}, not {self.test_fraction}: "
                "its test split would hold text it trained or validated on; test with the fraction it was trained with"
            )

    def train_dataloader(self) -> DataLoader:
        assert self.train_ids is not None
        trainer = self.trainer
        world_size = trainer.world_size if trainer else 1
        rank = trainer.global_rank if trainer else 0
        batches = self._batches_per_epoch()
        if len(self.train_parts) == 1:
            dataset = WindowDataset(self.train_ids, self.block_size)
            sampler = WindowBatchSampler(
                len(dataset), self.batch_size, batches, self.seed, self._progress, rank, world_size
            )
        else:  # windows index the whole cache; each source's starts lie inside its train range
            dataset = WindowDataset(self._ids, self.block_size)
            ranges = [s["train"] for s in self._meta["sources"]]
            sampler = WindowBatchSampler(
                [b - a - self.block_size for a, b in ranges],
                self.batch_size,
                batches,
                self.seed,
                self._progress,
                rank,
                world_size,
                offsets=[a for a, _ in ranges],
                weights=self._mixture_weights(),
            )
        return self._window_loader(dataset, sampler, ResumableDataLoader)

    def val_dataloader(self) -> DataLoader:
        return self._scored_loader("val", self.val_parts)

    def test_dataloader(self) -> DataLoader:
        return self._scored_loader("test", self.test_parts)

    def _scored_loader(self, split: str, parts: list[np.ndarray]) -> DataLoader:
        assert parts, f"no {split} split: call setup first"
        # Non-overlapping windows in order: every held-out token is scored once. A batch never
        # mixes sources.
        if len(parts) == 1:
            dataset: WindowDataset = WindowDataset(parts[0], self.block_size)
            ranges = [(0, len(parts[0]))]
        else:
            ranges = [tuple(s[split]) for s in self._meta["sources"]]
            dataset = SourceWindows(self._ids, self.block_size, [a for a, _ in ranges])
        per_source = []
        for a, b in ranges:
            starts = list(range(a, b - self.block_size, self.block_size))
            per_source.append([starts[i : i + self.batch_size] for i in range(0, len(starts), self.batch_size)])
        # Sources in turn, so a bounded validation (limit_val_batches) still sees each of them.
        batches = [batch for turn in itertools.zip_longest(*per_source) for batch in turn if batch is not None]
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

    def predict_dataloader(self) -> DataLoader:
        # Default: start from a newline, or the first symbol if this vocabulary has none.
        vocab = getattr(self.tokenizer, "vocab", None) or ["\n"]
        prompts = self.prompts or ["\n" if "\n" in vocab else vocab[0]]
        return DataLoader(prompts, batch_size=1, collate_fn=collate_prompts)
