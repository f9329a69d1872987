"""The paper's significance tests: exact McNemar on paired calls, Fisher's exact test per
imaging feature, and the Bonferroni / Holm adjustments for testing many features."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from spinefx.runtime.stats import as_binary, proportion

from .scores import jsonable


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts b and c.

    Under H0 the b + c discordant pairs split Binomial(b + c, 1/2);
    p = min(1, 2 * P(X <= min(b, c))) — equal to ``scipy.stats.binomtest(b, b + c, 0.5).pvalue``.
    No discordant pairs: p = 1.
    """
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError("discordant counts must be >= 0")
    n = b + c
    if n == 0:
        return 1.0
    return float(min(1.0, 2.0 * stats.binom.cdf(min(b, c), n, 0.5)))


def paired_mcnemar(y_true: Any, pred_a: Any, pred_b: Any) -> dict:
    """McNemar on the same cases: ``b`` = A right & B wrong, ``c`` = A wrong & B right.

    Returns ``{"n", "both_correct", "both_wrong", "b", "c", "p", "accuracy_a", "accuracy_b"}``.
    """
    y, a, bb = as_binary(y_true), as_binary(pred_a), as_binary(pred_b)
    if not (y.shape == a.shape == bb.shape):
        raise ValueError("truth and both sets of calls must have equal length")
    ra, rb = a == y, bb == y
    b = int(np.sum(ra & ~rb))
    c = int(np.sum(~ra & rb))
    n = int(len(y))
    return {"n": n, "both_correct": int(np.sum(ra & rb)), "both_wrong": int(np.sum(~ra & ~rb)),
            "b": b, "c": c, "p": mcnemar_exact(b, c),
            "accuracy_a": float(ra.mean()) if n else None,
            "accuracy_b": float(rb.mean()) if n else None}


def fisher_exact_2x2(a: int, b: int, c: int, d: int) -> dict:
    """Two-sided Fisher's exact test on ``[[a, b], [c, d]]`` -> ``{"odds_ratio", "p"}``."""
    res = stats.fisher_exact([[int(a), int(b)], [int(c), int(d)]], alternative="two-sided")
    return jsonable({"odds_ratio": float(res.statistic), "p": float(res.pvalue)})


def feature_test(present: Any, y_true: Any) -> dict:
    """A binary feature's frequency in each class and Fisher's exact p.

    Table ``[[malignant with, malignant without], [benign with, benign without]]``;
    the odds ratio is > 1 when the feature is commoner in malignant cases (inf / 0 -> None
    when a cell is empty).
    """
    f, y = as_binary(present), as_binary(y_true)
    mal_with = int(np.sum((f == 1) & (y == 1)))
    mal_n = int(np.sum(y == 1))
    ben_with = int(np.sum((f == 1) & (y == 0)))
    ben_n = int(np.sum(y == 0))
    fisher = fisher_exact_2x2(mal_with, mal_n - mal_with, ben_with, ben_n - ben_with)
    return {"malignant": proportion(mal_with, mal_n), "benign": proportion(ben_with, ben_n),
            "odds_ratio": fisher["odds_ratio"], "p": fisher["p"]}


def bonferroni(pvalues: Sequence[float]) -> list[float]:
    m = len(pvalues)
    return [min(1.0, float(p) * m) for p in pvalues]


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (same order as the input)."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="mergesort")
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj.tolist()
