"""LanguageModel: the LightningModule around GPT (steps, metrics, optimizer, generation)."""

from __future__ import annotations

import dataclasses
import importlib
import math
from pathlib import Path
from typing import IO, Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torchmetrics import MeanMetric, Metric, SumMetric

from craft.data.tokenizers import Tokenizer
from craft.errors import ConfigError, CraftError, note
from craft.generate import Engine
from craft.model import GPT, GPTConfig
from craft.optim import OPTIMIZERS, SCHEDULES, build_optimizer, check_lr_mults, check_settings, lr_schedule
from craft.sampling import SamplingConfig

# Sampling fields that checkpoints made before ``SamplingConfig`` was one argument hold at the top.
LEGACY_SAMPLING = ("max_new_tokens", "temperature", "top_k", "top_p", "seed")


class PerSource(Metric):
    """Validation nats, characters and tokens summed per source of a data mixture (summed over
    processes under DDP)."""

    full_state_update = False

    def __init__(self, sources: int) -> None:
        super().__init__()
        for name in ("nats", "chars", "tokens"):
            self.add_state(name, default=torch.zeros(sources, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, source: torch.Tensor, nats: torch.Tensor, chars: torch.Tensor) -> None:
        self.nats.index_add_(0, source, nats.sum(-1).double())
        self.chars.index_add_(0, source, chars.sum(-1).double())
        self.tokens.index_add_(0, source, torch.full_like(self.tokens[source], nats.size(-1)))

    def compute(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.nats, self.chars, self.tokens


class LanguageModel(L.LightningModule):
    def __init__(
        self,
        vocab_size: int,
        lr: float = 1e-3,
        min_lr: float = 1e-4,
        warmup_steps: int = 100,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.99),
        optimizer: str = "adamw",
        muon_lr: float = 0.01,
        muon_momentum: float = 0.95,
        muon_adjust_lr: str | None = "match_rms_adamw",
        lr_mults: dict[str, float] | None = None,
        schedule: str = "cosine",
        decay_fraction: float = 0.2,
        sampling: SamplingConfig = SamplingConfig(),
        compile: bool = False,
        compiled_decode: bool = False,
        **arch: Any,
    ) -> None:
        """
        Args:
            vocab_size: Tokens in the vocabulary (linked from the data module; never set by hand).
            lr: Peak learning rate of AdamW, reached after `warmup_steps`.
            min_lr: Learning rate at the end of the decay (Muon's ends at the same fraction of its peak).
            warmup_steps: Steps of linear warmup from 0 to `lr`.
            weight_decay: Decoupled weight decay on matrices (not on norms, biases or embeddings).
            betas: AdamW betas.
            optimizer: adamw, or muon: torch.optim.Muon for the blocks' matrices and AdamW (at `lr`)
                for embeddings, head, norms, biases and scalars (craft/optim.py).
            muon_lr: Peak learning rate of Muon.
            muon_momentum: Muon's momentum (Nesterov).
            muon_adjust_lr: Muon's per-shape LR rule: match_rms_adamw (Moonshot: updates with
                AdamW's RMS, so AdamW's LR and weight decay carry over), original (Keller Jordan's
                sqrt(max(1, rows/cols))), or null (none).
            lr_mults: Factors on `lr` by parameter role (craft/optim.py `param_role`): `embed`
                (token, position and value embeddings; a tied head), `head` (an untied head),
                `scalar` (norms, biases, scalars, gates) and, under AdamW alone, `matrix` (the
                blocks' matrices). Unnamed roles get 1; e.g. `{embed: 10, head: 0.3}`.
            schedule: LR schedule: cosine (warmup, cosine decay to min_lr) or wsd (warmup, flat,
                then a linear decay to min_lr over the last `decay_fraction` of the steps).
            decay_fraction: Fraction of the steps in wsd's final decay.
            sampling: How `predict` and `generate` draw tokens, and how many (craft/sampling.py):
                temperature, top_k, top_p, max_new_tokens, seed, stop.
            compile: Compile the inner transformer with torch.compile.
            compiled_decode: Generate (`predict`, `generate`) through a decode step compiled ahead of
                time by AOTInductor: several times faster on CPU. Needs a C++ compiler; compiled once
                per checkpoint and cached in ~/.cache/craft/decode. CPU only; samples during
                `fit` stay eager. Falls back to eager, with a warning, where it cannot compile.
            **arch: The network's fields (block_size, d_model, n_layers, ..., norm, mlp, positions and
                the components): `GPTConfig`'s, documented there (craft/model/config.py), so a new
                field needs no edit here.
        """
        super().__init__()
        # Checkpoints before the one sampling config kept its fields at the top level.
        legacy = {k: arch.pop(k) for k in LEGACY_SAMPLING if k in arch}
        self.sampling = SamplingConfig.of(sampling).with_(**legacy)
        self.save_hyperparameters(ignore=list(legacy))
        GPTConfig.check_names(arch)
        self.config = GPTConfig(vocab_size=vocab_size, **arch)
        # Every field into the hyperparameters (and so the checkpoint), set or defaulted; sampling
        # as plain values, which a weights-only checkpoint load accepts.
        self.hparams.update(dataclasses.asdict(self.config), sampling=self.sampling.as_dict())
        problems = check_settings(lr, min_lr, warmup_steps, weight_decay, betas, muon_lr, muon_momentum, decay_fraction)
        if problems:
            raise ConfigError("invalid model settings: " + "; ".join(problems))
        if optimizer not in OPTIMIZERS:
            raise CraftError(f"unknown optimizer {optimizer!r}: use one of {list(OPTIMIZERS)}")
        if schedule not in SCHEDULES:
            raise CraftError(f"unknown schedule {schedule!r}: use one of {list(SCHEDULES)}")
        check_lr_mults(lr_mults, optimizer)
        self.model = GPT(self.config)
        self._flops_per_token = self.model.flops_per_token()  # fixed by the shape; read every batch
        self.tokenizer: Tokenizer | None = None
        self.val_loss = MeanMetric()
        self.val_nats = SumMetric()
        self.val_chars = SumMetric()
        self.val_sources: list[str] = []  # names of a data mixture's sources, from the data module
        self.val_by_source: PerSource | None = None
        self._chars_per_token: torch.Tensor | None = None
        self._last_batch_tokens = 0
        self._engine: Engine | None = None

    # -- setup ---------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and getattr(dm, "tokenizer", None) is not None and dm.tokenizer.is_fitted:
            if self.tokenizer is not None and self.tokenizer.state() != dm.tokenizer.state():
                raise CraftError("the checkpoint's tokenizer differs from the data module's tokenizer")
            self.tokenizer = dm.tokenizer
        names = getattr(dm, "source_names", None) if dm is not None and stage != "predict" else None
        if names is not None and len(names) > 1 and self.val_by_source is None:
            self.val_sources, self.val_by_source = names, PerSource(len(names))
        if self.hparams.compile:
            self.model.compile()

    def on_fit_start(self) -> None:
        n, flops = self.model.num_params(), self._flops_per_token
        note(f"{n:,} parameters ({n / 1e6:.2f}M), {flops / 1e6:.2f} MFLOP per trained token")

    def set_tokenizer(self, tokenizer: Tokenizer) -> None:
        if tokenizer.vocab_size != self.config.vocab_size:
            raise CraftError(
                f"tokenizer has {tokenizer.vocab_size} tokens but the model was built for {self.config.vocab_size}"
            )
        self.tokenizer = tokenizer

    def require_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise CraftError("this model has no tokenizer: load it from a craft checkpoint or train it first")
        return self.tokenizer

    # -- training and validation ----------------------------------------------------------------

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        return self.model(idx, targets)

    @property
    def flops_per_batch(self) -> int:
        """FLOPs of the last batch, read by the throughput monitor: 6N + attention per trained token,
        a third of that per evaluated token (forward only)."""
        per_token = self._flops_per_token
        return self._last_batch_tokens * (per_token if self.training else per_token // 3)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        self._last_batch_tokens = x.numel()
        _, loss = self.model(x, y)
        if not torch.isfinite(loss):
            raise CraftError(
                f"non-finite training loss ({loss.item()}) at global step {self.global_step}; "
                "the last good checkpoint is kept. Lower lr or check the data"
            )
        # Under DDP each process sees a slice of the global batch: log the mean over all of them
        # (Lightning skips the reduction when not distributed).
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self._score(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self._score(batch, "test")  # the data module's test split, held out from training and validation

    def on_validation_epoch_end(self) -> None:
        self._log_scores("val")

    def on_test_epoch_end(self) -> None:
        self._log_scores("test")

    def _score(self, batch: tuple[torch.Tensor, ...], split: str) -> None:
        x, y, *source = batch  # a mixture's batches also say which source each window is from
        self._last_batch_tokens = x.numel()
        _, nats = self.model(x, y, loss_reduction="none")  # (B, T): one cross-entropy, each token's
        chars = self._chars(y)
        self.val_loss.update(nats)
        self.val_nats.update(nats.sum())
        self.val_chars.update(chars.sum())
        if source and self.val_by_source is not None:
            self.val_by_source.update(source[0], nats, chars)
        self.log(f"{split}/loss", self.val_loss, prog_bar=True)

    def _chars(self, ids: torch.Tensor) -> torch.Tensor:
        """Characters of original text that the token ids stand for (1 each for a char tokenizer)."""
        if self._chars_per_token is None or self._chars_per_token.device != ids.device:
            lengths = self.tokenizer.token_char_lengths() if self.tokenizer else [1] * self.config.vocab_size
            self._chars_per_token = torch.tensor(lengths, dtype=torch.float64, device=ids.device)
        return self._chars_per_token[ids]

    def _log_scores(self, split: str) -> None:
        nats, chars = self.val_nats.compute(), self.val_chars.compute()
        # Bits per character of the original text: comparable across tokenizers.
        self.log(f"{split}/bpc", (nats / chars / math.log(2)).float())
        self.log(f"{split}/ppl", torch.exp(self.val_loss.compute()))
        self.val_nats.reset()
        self.val_chars.reset()
        if self.val_by_source is not None and self.val_by_source.update_called:
            nats, chars, tokens = self.val_by_source.compute()
            for i, name in enumerate(self.val_sources):
                if not tokens[i]:
                    continue  # not reached within limit_val_batches
                self.log(f"{split}/loss/{name}", (nats[i] / tokens[i]).float())
                self.log(f"{split}/bpc/{name}", (nats[i] / chars[i] / math.log(2)).float())
            self.val_by_source.reset()

    # -- optimizer -----------------------------------------------------------------------------

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = build_optimizer(
            self.model,
            hp.optimizer,
            hp.lr,
            hp.weight_decay,
            hp.betas,
            hp.muon_lr,
            hp.muon_momentum,
            hp.muon_adjust_lr,
            hp.get("lr_mults"),  # absent from checkpoints made before it existed
        )
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise CraftError("set trainer.max_steps or trainer.max_epochs: the LR schedule needs a length")
        schedule = lr_schedule(hp.schedule, max(int(total), 1), hp.warmup_steps, hp.min_lr / hp.lr, hp.decay_fraction)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- checkpoints ---------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["tokenizer"] = self.require_tokenizer().state()
        # Lightning keeps no RNG state; dropout must continue its stream for an exact resume.
        checkpoint["torch_rng_state"] = torch.get_rng_state()

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: str | Path | IO,
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        weights_only: bool = True,
        tokenizer: str | None = None,
        **kwargs: Any,
    ) -> LanguageModel:
        """Lightning's ``load_from_checkpoint``, loading only what craft or the caller trusts.

        Part names in the checkpoint (``norm``, ``mlp``, ``positions``) must be built in or passed
        here as the same keyword (``norm="mylab.norms.DyT"``); a tokenizer of your own must be
        named by ``tokenizer`` (its import path). Anything else raises ``CraftError`` before any
        import (``craft/checkpoint.py``).
        """
        from craft.checkpoint import check_names, load_checkpoint

        def hint(field: str, name: str) -> str:
            return f"pass {field}={name!r} to load_from_checkpoint to trust it"

        if not isinstance(checkpoint_path, (str, Path)):
            raise CraftError("load_from_checkpoint needs a checkpoint file path (craft checks it before loading)")
        checkpoint = load_checkpoint(checkpoint_path, weights_only)
        checkpoint.setdefault("hyper_parameters", {}).update(kwargs)  # as Lightning applies them
        check_names(checkpoint, {**kwargs, "tokenizer": tokenizer}, hint)
        if any(k in checkpoint["hyper_parameters"] for k in LEGACY_SAMPLING) and hparams_file is None:
            # Saved before the sampling config: LightningCLI's instantiator would refuse the old
            # top-level fields, so the model is built from the checkpoint already read.
            lm = cls.from_checkpoint(checkpoint, tokenizer=tokenizer, **kwargs)
            return lm.to(map_location) if isinstance(map_location, (str, torch.device)) else lm
        if tokenizer is not None:
            importlib.import_module(tokenizer.rpartition(".")[0])  # the caller's class: defining it registers it
        return super().load_from_checkpoint(
            checkpoint_path, map_location, hparams_file, strict, weights_only=weights_only, **kwargs
        )

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any], tokenizer: str | None = None, **parts: str) -> LanguageModel:
        """The model of a checkpoint already loaded and checked (``craft/checkpoint.py``
        ``read_checkpoint``), without reading the file again: built from its hyperparameters (with
        the part names the caller trusts, as ``load_from_checkpoint`` takes them), its tokenizer and
        weights loaded, in eval mode. ``tokenizer`` is the import path of a trusted tokenizer class."""
        if tokenizer is not None:
            importlib.import_module(tokenizer.rpartition(".")[0])  # the caller's class: defining it registers it
        # Lightning's own entries ("_instantiator", written by LightningCLI) are not arguments.
        hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}
        lm = cls(**{**hparams, **parts})
        lm.on_load_checkpoint(checkpoint)
        lm.load_state_dict(checkpoint["state_dict"])
        return lm.eval()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "tokenizer" not in checkpoint:
            raise CraftError("checkpoint has no tokenizer; it was not written by craft")
        saved = checkpoint["tokenizer"]
        # predict/validate/test: the data module's tokenizer (set in setup) was built from this same
        # state by the CLI; it is kept, so each run builds its tokenizer once.
        if self.tokenizer is None or self.tokenizer.state() != saved:
            self.set_tokenizer(Tokenizer.from_state(saved))
        self._restored_rng_state = checkpoint.get("torch_rng_state")

    def on_train_start(self) -> None:
        state = getattr(self, "_restored_rng_state", None)
        if state is not None:
            torch.set_rng_state(state)
            self._restored_rng_state = None

    # -- generation ----------------------------------------------------------------------------

    def generate(
        self,
        prompt: str,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: list[str] | None = None,
    ) -> str:
        """Continue ``prompt``; returns only the new text. Unset arguments use ``self.sampling``."""
        sampling = self.sampling.with_(
            max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, stop=stop
        )
        return self.generate_all([prompt], sampling)[0]

    def generate_all(self, prompts: list[str], sampling: SamplingConfig | None = None) -> list[str]:
        """The new text after each prompt (equal-length prompts as one batch), by ``sampling``
        (default: the model's)."""
        return self.engine.generate(prompts, sampling or self.sampling, compiled=self._compiled_decode())

    @property
    def engine(self) -> Engine:
        tokenizer = self.require_tokenizer()
        if self._engine is None or self._engine.tokenizer is not tokenizer:
            self._engine = Engine(self.model, tokenizer, compiled=self.hparams.compiled_decode)
        return self._engine

    def _compiled_decode(self) -> bool:
        """Whether to use the compiled decode step now: as configured, but never while fitting
        (the weights change every step, so samples during fit stay eager)."""
        try:
            fitting = self.trainer.state.fn == TrainerFn.FITTING
        except RuntimeError:  # not attached to a Trainer: the Python API
            fitting = False
        return bool(self.hparams.compiled_decode) and not fitting

    def predict_step(self, batch: list[str], batch_idx: int) -> list[dict[str, str]]:
        return [{"prompt": p, "text": t} for p, t in zip(batch, self.generate_all(batch), strict=True)]
