"""Uncertainty of the results table: intervals that count both the seeds and the dev sample.

Every run of every experiment is scored on the SAME dev rows, so a row's score (the mean
over its k seeds of a task metric) is uncertain for two reasons: which seeds were drawn,
and which dev examples were drawn. Write the score of seed j on example set D as
y_j(D). In the usual crossed random-effects view, y_j = mu + a_j + e + (ae)_j: a seed
effect a_j, a dev-sample effect e shared by every run, and a seed-specific part (ae)_j of
the dev-sample error (which examples one seed happens to get right). Then

    Var(mean_j y_j) = sigma_a^2 / k + sigma_e^2 + sigma_ae^2 / k.

The pieces are measured separately:

- the SEED part, sigma_a^2 + sigma_ae^2, by the sample variance s^2 of the k per-seed
  scores (it contains the seed-specific dev error as well: it is what makes seeds differ);
- the SHARED DEV part, sigma_e^2, by a bootstrap over dev examples: B resamples of the
  dev rows with replacement, the same resample for every run (:func:`example_weights`),
  each task's metric recomputed from the per-example predictions (accuracy; Pearson r for
  STS; :func:`weighted_scores`). With v_j the bootstrap variance of seed j's score and
  v_bar their mean, and v_mean the bootstrap variance of the seed-averaged score,
  E[v_j] = sigma_e^2 + sigma_ae^2 and E[v_mean] = sigma_e^2 + sigma_ae^2 / k, so

      v_shared = (k v_mean - v_bar) / (k - 1)     (clipped at 0)

  estimates sigma_e^2 alone.

The 95% interval (:func:`interval`) is  estimate +- t_{0.975, nu} SE  with
SE^2 = s^2 / k + v_shared and nu the Welch-Satterthwaite degrees of freedom,
nu = (k - 1) (SE^2 / (s^2 / k))^2: the seed part is estimated from k - 1 degrees of freedom,
the dev part from many examples (infinite degrees of freedom). The interval is the paired
t-interval when the dev part is 0 and the normal interval of the bootstrap when the seed
part is 0. For a difference between two experiments ("Delta") the same formula is applied
to the per-seed differences over the seeds both ran, with per-example differences taken on
the same example resample, so everything the two runs of a seed share cancels.

Why not the plain hierarchical percentile bootstrap (resample seeds AND examples in each
replicate, take the 2.5 and 97.5 percentiles)? scripts/interval_coverage.py simulates
studies with the study's seed count and 1,000 dev examples whose truth is known and
measures both, for accuracy, Pearson r and the three-task mean, with normal and
heavy-tailed seed effects and with method-specific item effects (the numbers:
benchmarks/results/interval_coverage.txt, 1,000 simulated studies per regime and 6 seeds).
When seed effects dominate a difference, resampling the seeds gives intervals that are too
narrow (the bootstrap variance of a mean of k values is (k-1)/k s^2/k, and its tails are
normal, not t with k - 1 degrees of freedom): it covered the true difference 88% of the
time. When the seed-specific dev error dominates, it is counted twice (once in the seed
spread, once in the example resample): 99.5% coverage, intervals about 30% wider than
needed. The interval above covered 92.9-95.7% in all twelve regimes, rows and differences
alike (one, a difference where the shared dev sample dominates, at 92.9%: within the
simulation's noise of 93%).

Two partial intervals show which source dominates: :attr:`Interval.dev_lo` /
:attr:`Interval.dev_hi`, the percentile interval of the example bootstrap with the seeds
held fixed (dev-sample variance alone), and :attr:`Interval.seed_half`, the t-interval
half-width over seeds alone, t_{0.975, k-1} s / sqrt(k).

:func:`minimal_detectable_effect` turns the same SE into the smallest true difference a
two-sided 5% test detects with 80% power; :func:`detectable_parts` splits it into what more
seeds can lower (the seed part) and what they cannot (the dev-sample floor).

The tests behind the verdicts (:func:`difference_p`, :func:`equivalence_p`,
:func:`minimum_effect_p`) use the interval's own SE and nu, so a p-value below 0.05 is the
same statement as the 95% interval excluding 0 (or lying within, or wholly outside, a margin).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from mtlib.tasks import accuracy, pearson

MEAN = "mean"  # the headline metric: the plain mean of the task metrics
REPLICATES = 2000
BLOCK = 250  # replicates per block: bounds the (block x examples) weight matrix (~40 MB on full Quora dev)


def t_half_width(values, confidence: float = 0.95) -> float:
    """Half-width of the two-sided t-interval for the mean: t_{n-1} s / sqrt(n); NaN for n < 2."""
    values = np.asarray(values, float)
    values = values[~np.isnan(values)]
    n = len(values)
    if n < 2:
        return math.nan
    return float(stats.t.ppf(0.5 + confidence / 2, n - 1) * values.std(ddof=1) / math.sqrt(n))


# ---------------------------------------------------------------------------------------
# The example bootstrap

def example_weights(n: int, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """(replicates, n) bootstrap counts: row b says how often each of the n examples occurs
    in resample b (n draws with replacement; each row sums to n)."""
    draws = rng.integers(0, n, size=(replicates, n))
    flat = (draws + n * np.arange(replicates)[:, None]).ravel()
    return np.bincount(flat, minlength=replicates * n).reshape(replicates, n).astype(float)


def weighted_accuracy(weights: np.ndarray, predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(B, R) accuracy of each of R runs (rows of ``predictions``, (R, n)) on each resample
    (rows of ``weights``, (B, n)): sum_i w_i [p_i = y_i] / sum_i w_i."""
    correct = (np.asarray(predictions, float) == np.asarray(labels, float)).astype(float)
    return weights @ correct.T / weights.sum(1, keepdims=True)


def weighted_pearson(weights: np.ndarray, predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(B, R) Pearson r of each run's predictions with the labels on each resample, from
    weighted sums (W = sum w, X = sum w x, ...):
    r = (W Sxy - Sx Sy) / sqrt((W Sxx - Sx^2)(W Syy - Sy^2)); 0 where either side is
    constant, as :func:`mtlib.tasks.pearson`. Both sides are centred first (r does not
    change) so the differences of large sums do not lose digits."""
    x = np.asarray(predictions, float)
    x = x - x.mean(1, keepdims=True)
    y = np.asarray(labels, float)
    y = y - y.mean()
    total = weights.sum(1, keepdims=True)                                 # (B, 1)
    sx, sxx, sxy = weights @ x.T, weights @ (x * x).T, weights @ (x * y).T  # (B, R)
    sy, syy = weights @ y[:, None], weights @ (y * y)[:, None]           # (B, 1)
    covariance = total * sxy - sx * sy
    spread = (total * sxx - sx ** 2) * (total * syy - sy ** 2)
    safe = np.where(spread > 0, spread, 1.0)
    return np.where(spread > 0, covariance / np.sqrt(safe), 0.0)


#: The resampled version of each task metric of mtlib.tasks (keyed by the metric function).
WEIGHTED: dict[Callable, Callable] = {accuracy: weighted_accuracy, pearson: weighted_pearson}


def weighted_scores(metric: Callable, weights: np.ndarray, predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``metric`` (a task's metric function, e.g. mtlib.tasks.accuracy) of every run on every
    resample: (B, R). Weights of all ones give the metric on the dev set itself."""
    if metric not in WEIGHTED:
        raise KeyError(f"no resampled version of metric {getattr(metric, '__name__', metric)!r}; "
                       f"known: {[m.__name__ for m in WEIGHTED]}")
    return WEIGHTED[metric](weights, np.atleast_2d(predictions), labels)


def bootstrap_scores(metric: Callable, predictions: np.ndarray, labels: np.ndarray,
                     replicates: int = REPLICATES, seed=0) -> np.ndarray:
    """(replicates, R): each run's score on ``replicates`` example resamples, drawn from
    ``np.random.default_rng(seed)`` in blocks of :data:`BLOCK`. Resample b depends only on
    ``seed``, b and the number of examples, so every run of a task scored with the same seed
    sees the same resamples, whether scored together or apart."""
    predictions = np.atleast_2d(np.asarray(predictions, float))
    rng = np.random.default_rng(seed)
    blocks = []
    for start in range(0, replicates, BLOCK):
        weights = example_weights(predictions.shape[1], min(BLOCK, replicates - start), rng)
        blocks.append(weighted_scores(metric, weights, predictions, labels))
    return np.concatenate(blocks) if blocks else np.empty((0, len(predictions)))


@dataclass(frozen=True)
class Replicates:
    """Every run's score, per metric (each task and :data:`MEAN`), on the dev set itself
    (``point``: metric -> (R,)) and on B example resamples shared by all runs (``boot``:
    metric -> (B, R)); NaN where a run has no score for the metric. Column r is run
    ``runs[r]``, an (experiment, seed) pair."""
    runs: tuple[tuple[str, int], ...]
    point: Mapping[str, np.ndarray]
    boot: Mapping[str, np.ndarray]

    def values(self, metric: str, runs: Sequence[tuple[str, int]]) -> tuple[np.ndarray, np.ndarray]:
        """(k,) dev-set scores and (B, k) resampled scores of ``runs`` (in that order)."""
        missing = [run for run in runs if run not in self.runs]
        if missing:
            raise KeyError(f"no dev predictions for run(s) {missing}")
        columns = [self.runs.index(run) for run in runs]
        return self.point[metric][columns], self.boot[metric][:, columns]


def replicate_scores(labels: Mapping[str, np.ndarray], predictions: Mapping[str, Mapping[tuple[str, int], np.ndarray]],
                     metrics: Mapping[str, Callable], replicates: int = REPLICATES, seed: int = 0) -> Replicates:
    """:class:`Replicates` for every run in ``predictions`` (task -> {(experiment, seed): (n,)}
    aligned with ``labels[task]``). Task t (the i-th of ``labels``) is resampled from the
    generator seeded with (seed, i). A run's :data:`MEAN` is the mean of its task scores,
    on the same resample of each task's examples, where it has every task of ``labels``."""
    runs = tuple(sorted({run for per_task in predictions.values() for run in per_task}))
    point, boot = {}, {}
    for i, (task, y) in enumerate(labels.items()):
        have = [r for r, run in enumerate(runs) if run in predictions.get(task, {})]
        matrix = np.array([predictions[task][runs[r]] for r in have], float).reshape(len(have), len(y))
        point[task] = np.full(len(runs), np.nan)
        boot[task] = np.full((replicates, len(runs)), np.nan)
        if have:
            point[task][have] = weighted_scores(metrics[task], np.ones((1, len(y))), matrix, y)[0]
            boot[task][:, have] = bootstrap_scores(metrics[task], matrix, y, replicates, seed=(seed, i))
    tasks = list(labels)
    point[MEAN] = np.mean([point[t] for t in tasks], axis=0)
    boot[MEAN] = np.mean([boot[t] for t in tasks], axis=0)
    return Replicates(runs, point, boot)


# ---------------------------------------------------------------------------------------
# Intervals

@dataclass(frozen=True)
class Interval:
    """A mean over seeds (of scores, or of paired differences) and its uncertainty.

    ``lo``/``hi``: the interval counting seeds and the dev sample (module docstring);
    ``dev_lo``/``dev_hi``: the percentile interval of the example bootstrap with the seeds
    fixed (dev sample alone); ``seed_half``: the t-interval half-width over seeds alone.
    ``sd``: the standard deviation over seeds (ddof=1); ``dev_se``: sqrt(v_shared), the
    standard error of the shared dev-sample part; ``df``: Welch-Satterthwaite's nu."""
    estimate: float
    lo: float
    hi: float
    n: int
    sd: float = math.nan
    seed_half: float = math.nan
    dev_lo: float = math.nan
    dev_hi: float = math.nan
    dev_se: float = math.nan
    df: float = math.nan

    @property
    def se(self) -> float:
        """The standard error behind ``lo``/``hi``: sqrt(sd^2 / n + dev_se^2) (dev_se NaN: no
        dev-sample part, 0); NaN with fewer than two seeds."""
        if self.n < 2 or math.isnan(self.sd):
            return math.nan
        return math.sqrt(self.sd ** 2 / self.n + (0.0 if math.isnan(self.dev_se) else self.dev_se ** 2))

    @property
    def resolved(self) -> bool | None:
        """True when the interval excludes 0 (a difference resolved by the data), False when
        it holds 0, None without an interval."""
        if math.isnan(self.lo) or math.isnan(self.hi):
            return None
        return bool(self.lo > 0 or self.hi < 0)


def shared_dev_variance(boot: np.ndarray) -> float:
    """v_shared = (k v_mean - v_bar) / (k - 1), clipped at 0 (module docstring), from the
    (B, k) resampled per-seed scores; for k = 1, the bootstrap variance of the one seed."""
    k = boot.shape[1]
    v_mean = float(boot.mean(1).var(ddof=1))
    if k < 2:
        return v_mean
    v_bar = float(boot.var(axis=0, ddof=1).mean())
    return max((k * v_mean - v_bar) / (k - 1), 0.0)


def satterthwaite_df(seed_variance: float, n: int, dev_variance: float) -> float:
    """nu = (k - 1) (SE^2 / (s^2/k))^2 with SE^2 = s^2/k + v_dev: the degrees of freedom of
    a sum of a k-1 degree-of-freedom variance estimate and one known (from many examples)."""
    seed_part = seed_variance / n
    if seed_part <= 0:
        return math.inf
    return (n - 1) * ((seed_part + dev_variance) / seed_part) ** 2


def interval(point, boot: np.ndarray | None = None, confidence: float = 0.95) -> Interval:
    """The :class:`Interval` of the mean of ``point`` (k per-seed scores or paired
    differences), with ``boot`` (B, k) the same on B example resamples (None: no dev-sample
    part is known, e.g. validation curves, whose examples are not stored; the interval is
    then the t-interval over seeds). With one seed there is no seed variance to measure:
    ``lo``/``hi`` are NaN."""
    point = np.asarray(point, float)
    k = len(point)
    if k == 0 or np.isnan(point).any():
        return Interval(math.nan, math.nan, math.nan, 0)
    q = 0.5 + confidence / 2
    estimate = float(point.mean())
    sd = float(point.std(ddof=1)) if k > 1 else math.nan
    fields = {"estimate": estimate, "n": k, "sd": sd, "seed_half": t_half_width(point, confidence)}
    dev_variance = 0.0
    if boot is not None:
        dev_lo, dev_hi = np.quantile(np.asarray(boot, float).mean(1), [1 - q, q])
        dev_variance = shared_dev_variance(np.asarray(boot, float))
        fields.update(dev_lo=float(dev_lo), dev_hi=float(dev_hi), dev_se=math.sqrt(dev_variance))
    if k < 2:
        return Interval(lo=math.nan, hi=math.nan, **fields)
    df = satterthwaite_df(sd ** 2, k, dev_variance)
    half = float(stats.t.ppf(q, df)) * math.sqrt(sd ** 2 / k + dev_variance)
    return Interval(lo=estimate - half, hi=estimate + half, df=df, **fields)


# ---------------------------------------------------------------------------------------
# Power

def minimal_detectable_effect(sd: float, n: int, dev_se: float = 0.0, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true difference a two-sided level-``alpha`` test of a paired difference
    over ``n`` seeds detects with probability ``power``:

        MDE = (t_{1 - alpha/2, nu} + t_{power, nu}) SE,  SE = sqrt(sd^2 / n + dev_se^2),

    with ``sd`` the standard deviation of per-seed differences, ``dev_se`` the standard
    error of the shared dev-sample part of the difference and nu Welch-Satterthwaite's
    degrees of freedom (:func:`satterthwaite_df`). This is the usual normal-approximation
    power formula (the noncentral t replaced by a shifted central t), written for the
    interval that :func:`interval` reports, so that a true effect of MDE is declared
    resolved by the table about ``power`` of the time. For dev_se = 0 it is the paired
    t-test's (t_{.975, n-1} + t_{.80, n-1}) sd / sqrt(n)."""
    if n < 2 or math.isnan(sd):
        return math.nan
    df = satterthwaite_df(sd ** 2, n, dev_se ** 2)
    quantiles = stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)
    return float(quantiles * math.sqrt(sd ** 2 / n + dev_se ** 2))


def detectable_parts(sd: float, n: int, dev_se: float = 0.0, alpha: float = 0.05,
                     power: float = 0.8) -> tuple[float, float, float]:
    """(MDE, its seed part, its dev-sample floor) of one comparison. MDE is
    :func:`minimal_detectable_effect` of both sources, q SE with q = t_{1 - alpha/2, nu} +
    t_{power, nu}; the seed part is q sd / sqrt(n), the share that more seeds lower (MDE^2 =
    seed part^2 + (q dev_se)^2); the floor is (z_{1 - alpha/2} + z_{power}) dev_se, the MDE as
    the number of seeds grows without bound, which no number of seeds lowers (every run is
    scored on the same dev rows). NaN dev_se counts as 0 (no dev-sample part known)."""
    dev_se = 0.0 if math.isnan(dev_se) else dev_se
    floor = float((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * dev_se)
    mde = minimal_detectable_effect(sd, n, dev_se, alpha, power)
    if math.isnan(mde):
        return mde, mde, floor
    se = math.sqrt(sd ** 2 / n + dev_se ** 2)
    return mde, (mde * (sd / math.sqrt(n)) / se if se > 0 else 0.0), floor


# ---------------------------------------------------------------------------------------
# Tests: the interval's SE and degrees of freedom turned into p-values

def _tail(t: float, df: float) -> float:
    """P(T_df >= t) (df NaN or infinite: the normal's)."""
    if math.isnan(df) or math.isinf(df):
        return float(stats.norm.sf(t))
    return float(stats.t.sf(t, df))


def _usable(result: Interval) -> bool:
    return not (math.isnan(result.estimate) or math.isnan(result.se))


def difference_p(result: Interval) -> float:
    """Two-sided p of H0: Δ = 0, t = estimate / se on nu = ``result.df`` degrees of freedom:
    below 0.05 exactly when the 95% interval excludes 0. NaN without an interval."""
    if not _usable(result):
        return math.nan
    if result.se == 0:
        return 0.0 if result.estimate != 0 else 1.0
    return min(1.0, 2 * _tail(abs(result.estimate) / result.se, result.df))


def _one_sided(distance: float, result: Interval) -> float:
    """P of a one-sided test whose statistic is ``distance`` / se (positive: evidence)."""
    if result.se == 0:
        return 0.0 if distance > 0 else 1.0
    return _tail(distance / result.se, result.df)


def equivalence_p(result: Interval, margin: float) -> float:
    """p of H0: |Δ| >= margin (two one-sided tests, each at half the level, so that p < 0.05
    exactly when the 95% interval lies within [-margin, +margin]): 2 max(p_low, p_high),
    capped at 1. NaN without an interval or margin."""
    if not _usable(result) or math.isnan(margin):
        return math.nan
    low = _one_sided(result.estimate + margin, result)    # H0: Δ <= -margin
    high = _one_sided(margin - result.estimate, result)   # H0: Δ >= +margin
    return min(1.0, 2 * max(low, high))


def minimum_effect_p(result: Interval, margin: float) -> float:
    """p of H0: |Δ| <= margin (the effect is at least ``margin`` in one direction when
    rejected), 2 min(p_above, p_below), capped at 1: below 0.05 exactly when the 95%
    interval lies wholly outside [-margin, +margin]. NaN without an interval or margin."""
    if not _usable(result) or math.isnan(margin):
        return math.nan
    above = _one_sided(result.estimate - margin, result)
    below = _one_sided(-margin - result.estimate, result)
    return min(1.0, 2 * min(above, below))


# ---------------------------------------------------------------------------------------
# Learning curves

def curve_mean(examples, scores, start: float, stop: float) -> float:
    """The mean of a learning curve over [start, stop] examples seen: the area under the
    curve (scores at evaluations after ``examples`` examples, joined by straight lines)
    between start and stop, divided by stop - start. NaN when the evaluations do not span
    the range (no extrapolation)."""
    x, y = np.asarray(examples, float), np.asarray(scores, float)
    keep = ~np.isnan(x) & ~np.isnan(y)
    order = np.argsort(x[keep], kind="stable")
    x, y = x[keep][order], y[keep][order]
    if not len(x) or not x[0] <= start < stop <= x[-1]:
        return math.nan
    grid = np.concatenate([[start], x[(x > start) & (x < stop)], [stop]])
    values = np.interp(grid, x, y)
    return float(((values[1:] + values[:-1]) / 2 * np.diff(grid)).sum() / (stop - start))
