"""The statistics of a comparison: mean ± std over seeds, Welch's t-test, when a curve reaches a target."""

from __future__ import annotations


def mean_std(values: list[float]) -> tuple[float, float]:
    """The mean and the sample standard deviation (n - 1; 0 for one value)."""
    n = len(values)
    mean = sum(values) / n
    return mean, (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else 0.0


def welch_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided p-value of Welch's t-test (unequal variances) of mean(a) = mean(b); None below 2 each."""
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy import stats

    p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return None if p != p else p  # nan when both samples have no spread


def reach(curve: dict[str, list[float]], target: float) -> tuple[float, float] | None:
    """(tokens, seconds) at which the val bpc curve first reaches ``target``, interpolated linearly
    between evaluations; None if it never does."""
    bpc, tokens, seconds = curve["val_bpc"], curve["tokens"], curve["seconds"]
    for i, b in enumerate(bpc):
        if b <= target:
            if i == 0:
                return tokens[0], seconds[0]
            f = (bpc[i - 1] - target) / (bpc[i - 1] - b)
            return (tokens[i - 1] + f * (tokens[i] - tokens[i - 1]), seconds[i - 1] + f * (seconds[i] - seconds[i - 1]))
    return None
