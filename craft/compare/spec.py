"""A comparison file (``Spec``) and the configs it names, merged as the CLI would merge them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from craft.errors import CraftError


@dataclass
class Spec:
    base: list[str]
    runs: dict[str, Any]  # name -> overlays, or {overlays: [...], tokens: N, args: [...], seeds: [...]}
    tokens: int
    log_dir: str = "logs/compare"
    out: str = "docs"
    title: str = "Comparison"
    evals: int = 6
    args: list[str] = field(default_factory=list)
    prompt: str = "The "
    sample_tokens: int = 200
    seeds: int | list[int] = 3  # a count (1337, 1338, ...) or the seeds themselves
    seconds: float | None = None  # a wall-clock cap per run, besides the token budget
    baseline: str | None = None  # the run the others are tested against (default: the first)
    target_bpc: float | str | None = "baseline"  # a bpc, or "baseline": the baseline's mean final bpc
    lr_grid: list[float] = field(default_factory=lambda: [1.0])  # factors on lr and muon_lr
    lr_grid_extend: int = 0  # times a grid whose best is at its edge grows one factor past it
    int8: bool = True  # also score each config's first seed after int8 ONNX export
    int8_windows: int = 64  # validation windows for that score
    records: str | None = None  # where each finished run's record goes (default: <out>/runs)

    @classmethod
    def load(cls, path: Path) -> Spec:
        try:
            raw = yaml.safe_load(path.read_text())
            spec = cls(**raw)
        except (OSError, yaml.YAMLError, TypeError) as e:
            raise CraftError(f"cannot read comparison file {path}: {e}") from None
        if spec.baseline is not None and spec.baseline not in spec.runs:
            raise CraftError(f"baseline {spec.baseline!r} is not one of the runs {list(spec.runs)}")
        if not spec.lr_grid or any(f <= 0 for f in spec.lr_grid):
            raise CraftError(f"lr_grid must list positive factors, got {spec.lr_grid!r}")
        if not isinstance(spec.lr_grid_extend, int) or spec.lr_grid_extend < 0:
            raise CraftError(f"lr_grid_extend must be a count >= 0, got {spec.lr_grid_extend!r}")
        spec.lr_grid = [float(f) for f in spec.lr_grid]  # 1 and 1.0 name one run and one column
        return spec

    def record_file(self, experiment: str) -> Path:
        return Path(self.records or Path(self.out) / "runs") / f"{experiment}.json"

    @property
    def seed_list(self) -> list[int]:
        return list(range(1337, 1337 + self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    def run(self, name: str) -> tuple[list[str], int, list[str]]:
        """A run's overlays, token budget and extra arguments."""
        r = self.runs[name]
        if isinstance(r, dict):
            return list(r.get("overlays", [])), int(r.get("tokens", self.tokens)), list(r.get("args", []))
        return list(r), self.tokens, []


# -- statistics ----------------------------------------------------------------------------------


def merged_config(files: list[str]) -> dict[str, Any]:
    """The YAML files merged in order (later wins), enough to read batch and block sizes."""
    out: dict[str, Any] = {}

    def merge(into: dict, new: dict) -> None:
        for k, v in new.items():
            if isinstance(v, dict) and isinstance(into.get(k), dict):
                merge(into[k], v)
            else:
                into[k] = v

    for f in files:
        merge(out, yaml.safe_load(Path(f).read_text()) or {})
    return out


def data_section(configs: list[str], args: list[str]) -> dict[str, Any]:
    """The run's ``data:`` settings: its YAML files' section with the ``--data.*`` flags applied."""
    data = dict(merged_config(configs).get("data", {}))
    for flag, value in zip(args[::2], args[1::2], strict=False):
        if flag.startswith("--data."):
            data[flag.removeprefix("--data.")] = yaml.safe_load(value)
    return data


def base_lrs(configs: list[str]) -> tuple[float, float]:
    """The config's lr and muon_lr (LanguageModel's defaults where the YAML does not set them)."""
    import inspect

    from craft.module import LanguageModel

    defaults = inspect.signature(LanguageModel.__init__).parameters
    model = merged_config(configs).get("model", {})
    return model.get("lr", defaults["lr"].default), model.get("muon_lr", defaults["muon_lr"].default)
