"""Response-length distributions: a capped lognormal or an empirical sample, and named presets.

A response length is an integer number of new tokens in [1, max_new_tokens]:
lognormal: L = clip(rint(exp(mu + sigma Z)), 1, cap) with mu = ln(mean) - sigma^2 / 2, so
``mean`` is the mean of the *uncapped* lognormal; empirical: L = clip(x, 1, cap) for x
drawn uniformly from the given lengths. ``pmf`` gives the exact distribution of L (used
by the closed-form estimates), ``sample`` draws from it with a ``numpy.random.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._checks import check_choice, check_positive


@dataclass(frozen=True)
class LengthDist:
    """A capped response-length distribution (tokens)."""

    kind: str
    """"lognormal" or "empirical"."""
    cap: int
    """max_new_tokens: longer responses are truncated to this many tokens."""
    mean: float = 0.0
    """Lognormal: mean of the uncapped distribution, tokens."""
    sigma: float = 0.0
    """Lognormal: log-space standard deviation."""
    samples: tuple[int, ...] = ()
    """Empirical: the lengths resampled uniformly, tokens."""

    def __post_init__(self):
        check_choice("kind", self.kind, ("lognormal", "empirical"))
        check_positive("cap", self.cap)
        if self.kind == "lognormal":
            check_positive("mean", self.mean)
            check_positive("sigma", self.sigma)
        elif not self.samples:
            raise ValueError("samples must hold at least one length for an empirical distribution")

    @classmethod
    def from_config(cls, cfg) -> LengthDist:
        return cls(cfg.length_dist, cfg.max_new_tokens, cfg.length_mean, cfg.length_sigma, cfg.length_samples)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` lengths, int64, each in [1, cap]."""
        if self.kind == "lognormal":
            mu = math.log(self.mean) - self.sigma**2 / 2
            x = np.rint(np.exp(mu + self.sigma * rng.standard_normal(n)))
        else:
            x = np.asarray(self.samples, dtype=np.float64)[rng.integers(0, len(self.samples), n)]
        return np.clip(x, 1, self.cap).astype(np.int64)

    def pmf(self) -> np.ndarray:
        """Exact P(L = k) for k = 0..cap (index k; P(L = 0) = 0)."""
        if self.kind == "empirical":
            x = np.clip(np.asarray(self.samples, dtype=np.int64), 1, self.cap)
            return np.bincount(x, minlength=self.cap + 1) / len(x)
        mu = math.log(self.mean) - self.sigma**2 / 2
        k = np.arange(1, self.cap, dtype=np.float64)  # rint(X) <= k  <=>  X < k + 0.5 (ties have measure 0)
        z = (np.log(k + 0.5) - mu) / (self.sigma * math.sqrt(2))
        cdf = 0.5 * (1 + np.array([math.erf(v) for v in z]))  # P(L <= k), k = 1..cap-1
        cdf = np.concatenate([[0.0], cdf, [1.0]])  # k = 0..cap; the cap holds the tail
        return np.diff(cdf, prepend=0.0)

    def mean_length(self) -> float:
        """E[L] of the capped distribution, tokens."""
        p = self.pmf()
        return float(np.arange(len(p)) @ p)

    def mean_max(self, g: int) -> float:
        """E[max of g independent lengths], tokens: sum over k of (1 - P(L <= k)^g)."""
        cdf = np.cumsum(self.pmf())[:-1]  # P(L <= k), k = 0..cap-1
        return float(np.sum(1.0 - cdf**g))

    def size_biased_mean(self) -> float:
        """E[L^2] / E[L]: the mean length of the response a random *token* belongs to, tokens."""
        p = self.pmf()
        k = np.arange(len(p), dtype=np.float64)
        return float((k * k) @ p / (k @ p))


@dataclass(frozen=True)
class LengthPreset:
    """Named length settings with the source of every number."""

    mean: float
    sigma: float
    cap: int
    source: str


LENGTH_PRESETS: dict[str, LengthPreset] = {
    # DeepScaleR (Luo et al. 2025, "DeepScaleR: Surpassing O1-Preview with a 1.5B Model by Scaling RL",
    # agentica blog; summarised at long8v.github.io/PTIR/posts/225-...): R1-Distill-Qwen-1.5B's average
    # response fell from 5,500 to 3,500 tokens in the 8K-context stage, and its incorrect AIME responses
    # were three times longer than its correct ones. The cap is that stage's 8K context. sigma = 0.8 is
    # illustrative: no published quantile of the length distribution was found.
    "deepscaler-8k": LengthPreset(5500.0, 0.8, 8192, "mean: DeepScaleR blog (start of the 8K stage); "
                                  "cap: its 8K context; sigma 0.8: illustrative"),
    # The same model at AReaL's benchmark length limit: 32,768 context minus a 1,024-token prompt budget
    # (inclusionAI/AReaL benchmark/verl_v0_3_0_post1_312a8cb/README.md, "Maximum Generation Length: 31k";
    # build_cmd.py: max_new_tokens = ctx - 1024). The mean keeps DeepScaleR's 5,500 (measured under an
    # 8K cap, so the uncapped mean is if anything larger); sigma 0.8 illustrative as above.
    "r1-distill-32k": LengthPreset(5500.0, 0.8, 31744, "mean: DeepScaleR blog; cap: AReaL benchmark README "
                                   "(32k context - 1k prompt); sigma 0.8: illustrative"),
    # Teaching and tests: short, moderately heavy-tailed; every number illustrative.
    "short": LengthPreset(600.0, 0.6, 2048, "illustrative"),
}


def length_overrides(name: str) -> dict:
    """SystemConfig fields of a length preset (``length_mean``, ``length_sigma``, ``max_new_tokens``)."""
    check_choice("lengths", name, LENGTH_PRESETS)
    p = LENGTH_PRESETS[name]
    return dict(length_dist="lognormal", length_mean=p.mean, length_sigma=p.sigma, max_new_tokens=p.cap)
