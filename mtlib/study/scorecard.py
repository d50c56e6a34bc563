"""The report's claims, judged by this study's runs.

Each claim of the report (its section 5 and Table 2, as listed in the study's issues 16 and 20)
is data: the report's words, the claimed direction, and the comparisons it rests on (an
experiment against a reference, on one metric; Δ = experiment − reference, paired by seed).
The comparisons are declared before any run is read, in two kinds:

- **primary**: the comparison the claim is judged on, one per claim unless the claim's words
  name several (the annealed schedule's "SST and STS", "every RNN / LSTM head", the three
  gradient-surgery methods). Its metric is SST wherever the claim allows: the backbone,
  all-MiniLM-L6-v2, was trained on Quora duplicate pairs, so para (and the mean, which holds
  it) is contaminated. The mean is used where the report's own numbers make the claim on the
  mean only (gradient surgery: its SST numbers go the other way), STS or para where the claim
  is about that task.
- **secondary**: shown beside it (other tasks, the mean, other references, the rows that split
  a bundled change), judged at the uncorrected level and never deciding a verdict.

How a comparison is measured (``statistic``): the paired Δ of dev scores with the results
table's 95% interval (seeds and dev sample, mtlib.study.stats.interval); for the
learning-speed claim, the paired Δ of the area under the validation curve; for the cost
claim, the paired log ratio of training speed (both: t-interval over seeds, no dev part).

Each comparison gets a p-value from the interval's own SE and degrees of freedom
(mtlib.study.stats.difference_p and friends), so an uncorrected p below 0.05 is the same
statement as the 95% interval excluding 0:

- a directional claim ('better' / 'worse'): the two-sided p of Δ = 0; when it is below
  :data:`ALPHA` the comparison is **confirmed** if Δ has the claimed sign and **contradicted**
  if not; otherwise **not resolvable at this profile**;
- a 'no effect' claim, with an equivalence margin m equal to that comparison's own minimal
  detectable effect (MDE, 5% level, 80% power, from the same measured SE: "no effect" then
  means no effect this comparison could have detected; a fixed margin well below the MDE is
  almost never confirmed, and one well above it ignores how precise a comparison is;
  equivalence within m = MDE needs |Δ| below about 0.84 SE): **confirmed** when the
  equivalence p (H0: |Δ| >= m) is below ALPHA (the interval lies within ±m), **contradicted**
  when the minimum-effect p (H0: |Δ| <= m) is (the interval lies wholly outside ±m),
  otherwise not resolvable. The two cannot both be below ALPHA; the comparison's p is the
  smaller;
- a comparison whose experiment or reference has no run is **not run at this profile**.

**Multiplicity.** Every primary comparison of every claim forms one family; its p-values are
Holm-corrected together (statsmodels' ``multipletests``), and a primary comparison's verdict
uses the Holm p. The uncorrected p and verdict are shown beside it.

**Combination rule** (claims with several primary comparisons), symmetric in confirmation and
contradiction: a claim is **confirmed** when every primary comparison is confirmed,
**contradicted** when every one is contradicted, and **not resolvable** otherwise (some not
resolved, or some confirming while others contradict). A claim is judged on the primary
comparisons the profile ran and says how many that is when some were not run.

**The title question** ("master of all trades or jack of none?": does one shared encoder
match a model per task?) is one 'no effect' claim per task, on that task's metric, the
multitask BaseModel against a single-task model. Its primary comparison is at equal examples
of that task seen (``single_<task>_matched``): that is the report's question, what sharing
the encoder costs a task given the same data of it. Equal total compute (``single_<task>``,
whose every micro-batch is of that task) is secondary. A Δ wholly beyond the margin
on the positive side reads "the multitask model is better", on the negative side "worse".

**Mechanisms and budget.** The annealed sampler's α and Gradient Compromise's β change once per
epoch; a profile with fewer epochs than the report's (the paper profile's) gives those
schedules fewer, larger steps. Claims resting on them carry a note computed from the config:
the schedule's values at this profile's epochs against the report's.

**Learning speed.** Gradient Compromise's "much faster at learning" is judged on validation
curves (history.csv) at matched numbers of training examples seen (one Gradient Compromise
update consumes a whole group of batches, so updates are not comparable). The statistic is
each run's area under its validation curve divided by its width (mtlib.study.stats.curve_mean),
from the latest first evaluation of the runs compared to the fewest examples any of them saw by
its last evaluation, paired by seed: the whole common run, so the first-epoch gap and whether it
lasts both count, and no epoch boundary has to line up with Compromise's groups of batches.
A learner that is faster and ends level has the larger area. The validation examples are not
stored, so the interval is the t-interval over seeds (every run uses the same validation rows).

**Cost.** "The PAL schedule is simpler and way faster than gradient surgery" is judged on the
runs' own training speed: real (unpadded) tokens trained per second of update time
(metrics.json ``train_tokens_per_second``; evaluation excluded), as the paired log ratio
(annealed sampler / PCGrad). Per update would charge PCGrad for the three batches it consumes
per update (one per task) against the sampler's one; per example would charge whichever
method draws more long Quora pairs. Tokens per second is what a user pays for the same amount
of training text. The controlled measurement of the surgery alone on identical batches
(benchmarks/results/bench_combiners_*.json, ``ratios_vs_sum``: a PCGrad update against a
plainly summed one) is shown in the claim's note: it separates the surgery's own cost from
the plan's (every task's batch in every update).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from statsmodels.stats.multitest import multipletests

from mtlib.config import load_config, read_params
from mtlib.study import budget
from mtlib.study.report import METRICS, markdown_rows, report_row, seed_interval
from mtlib.study.stats import (Interval, Replicates, curve_mean, detectable_parts, difference_p, equivalence_p,
                               interval, minimum_effect_p)
from mtlib.tasks import metric_key
from mtlib.training.plans import compromise_beta
from mtlib.training.samplers import annealed_alpha

BETTER, WORSE, NO_EFFECT = "better", "worse", "no effect"
DIRECTIONS = (BETTER, WORSE, NO_EFFECT)
CONFIRMED, CONTRADICTED = "confirmed", "contradicted"
NOT_RESOLVABLE, NOT_RUN = "not resolvable at this profile", "not run at this profile"
ALPHA = 0.05                                       # every test's level (module docstring)
DEV, CURVE, SPEED = "dev", "validation curve area", "training speed"  # what a comparison measures
PRIMARY, SECONDARY = "primary", "secondary"
SPEED_COLUMN = "train_tokens_per_second"           # the cost claim's measure (module docstring)
REPORT_PROFILE = "paper"                           # the profile that trains as the report did
RULE = ("confirmed if every primary comparison is confirmed, contradicted if every one is contradicted, "
        "otherwise not resolvable")

#: The epoch schedules a claim's mechanism can rest on: (what it is, its value at (epoch, epochs)).
SCHEDULES = {"annealed": ("the annealed sampler's α", annealed_alpha),
             "compromise": ("Gradient Compromise's β", compromise_beta)}


@dataclass(frozen=True)
class Comparison:
    """``experiment`` against ``reference`` on ``metric`` (a task or 'mean'): Δ = experiment − reference."""
    experiment: str
    reference: str
    metric: str = "sst"


@dataclass(frozen=True)
class Claim:
    name: str
    words: str                              # the report's claim, in its words where quoted
    direction: str                          # BETTER, WORSE or NO_EFFECT
    primary: tuple[Comparison, ...]         # what the verdict rests on (module docstring)
    secondary: tuple[Comparison, ...] = ()  # shown, never deciding
    statistic: str = DEV                    # DEV, CURVE or SPEED
    note: str = ""                          # what the comparisons leave out, and why
    schedule: str | None = None             # a key of SCHEDULES the mechanism needs epochs for
    benchmark: str | None = None            # a combiner whose bench_combiners cost is shown (cost claim)

    @property
    def comparisons(self) -> tuple[Comparison, ...]:
        return self.primary + self.secondary


def _each(experiments: Sequence[str], reference: str, metrics: Sequence[str] = ("sst",)) -> tuple[Comparison, ...]:
    return tuple(Comparison(e, reference, m) for e in experiments for m in metrics)


SURGERY = ("hidden_pcgrad", "hidden_gradvac", "hidden_compromise")
RECURRENT = ("hidden_rnn128", "hidden_rnn128_cls", "hidden_lstm128_cls", "hidden_lstm256_cls")


def _title(task: str) -> Claim:
    return Claim(f"title_{task}", f"one multitask encoder matches a model trained on {task} alone (the title question)",
                 NO_EFFECT, (Comparison("base_model", f"single_{task}_matched", task),),
                 (Comparison("base_model", f"single_{task}", task),),
                 note=f"primary: equal {task} examples seen (the report's question: what sharing the encoder "
                      "costs a task); secondary: equal total compute. A positive Δ beyond the margin means the "
                      "multitask model is better")


CLAIMS: tuple[Claim, ...] = (
    Claim("annealed", 'the annealed schedule "massively improved" SST and STS', BETTER,
          _each(["base_annealed"], "base_model", ["sst", "sts"]),
          (*_each(["base_annealed"], "base_round_robin", ["sst", "sts"]),
           *_each(["embedding_concat_annealed"], "embedding_concat", ["sst", "sts"])),
          note="against the random sampler; round robin (the report's schedule before annealing) and the "
               "embedding-concatenation pair secondary", schedule="annealed"),
    Claim("sentence_concat", "sentence concatenation was the largest gain (STS .337 → .749)", BETTER,
          (Comparison("base_model", "embedding_concat", "sts"),),
          (Comparison("base_annealed", "embedding_concat_annealed", "sts"),),
          note="with the sampler held fixed (the report's .337 → .749 also changes the sampler); "
               "'largest' is not tested"),
    Claim("individual_pretraining", 'individual head pretraining made "a massive difference"', BETTER,
          _each(["advanced_model"], "augmented"), _each(["advanced_model"], "augmented", ["mean"])),
    Claim("hidden", "one hidden layer gave a small gain", BETTER,
          _each(["hidden"], "base_annealed"), _each(["hidden"], "base_annealed", ["mean"])),
    Claim("augmentation", "data augmentation gave a small gain", BETTER,
          _each(["augmented"], "hidden"),
          (*_each(["augmented"], "hidden", ["mean"]), *_each(["hidden_length_filter", "hidden_eda"], "hidden")),
          note="augmented changes the 2% length filter, the class balance (EDA) and the sampler's task sizes "
               "at once; hidden_length_filter and hidden_eda take them one at a time (secondary)"),
    Claim("gradient_surgery", "gradient surgery scored below the annealed schedule", WORSE,
          _each(SURGERY, "hidden", ["mean"]),
          (*_each(SURGERY, "hidden"), *_each(["hidden_pcgrad", "hidden_gradvac"], "hidden_each_task", ["mean"])),
          note="on the mean: the report's SST numbers put GradVac and Compromise above the annealed schedule; "
               "against one batch of every task plainly summed (hidden_each_task) secondary", schedule="compromise"),
    Claim("compromise_speed", 'Gradient Compromise "was much faster at learning"', BETTER,
          _each(["hidden_compromise"], "hidden"), _each(["hidden_compromise"], "hidden", ["mean"]),
          statistic=CURVE, schedule="compromise"),
    Claim("recurrent_heads", "every RNN / LSTM head scored below the MLP head", WORSE,
          _each(RECURRENT, "hidden"), _each(RECURRENT, "hidden", ["mean"]),
          note="the STS-only LSTM row is left out: the report's own numbers put it above the MLP head"),
    Claim("rnn_cls", "adding [CLS] to the RNN head helped", BETTER,
          _each(["hidden_rnn128_cls"], "hidden_rnn128"), _each(["hidden_rnn128_cls"], "hidden_rnn128", ["mean"])),
    Claim("pal_start", "PALs trained from the start hurt", WORSE,
          _each(["pal_start"], "advanced_model"), _each(["pal_start"], "advanced_model", ["mean"])),
    Claim("pal_after", "PALs added after fine-tuning added about 0.3%", BETTER,
          _each(["pal_after"], "continued"),
          (*_each(["pal_after"], "advanced_model", ["sst", "mean"]), *_each(["pal_after"], "continued_heads")),
          note="against continued, the AdvancedModel fine-tuned for the same extra micro-batches (the same "
               "compute); against the AdvancedModel that stopped, and a heads-only continuation, secondary"),
    Claim("schedule_cost", 'the PAL schedule is "simpler and way faster" than gradient surgery', BETTER,
          (Comparison("hidden", "hidden_pcgrad", "mean"),), statistic=SPEED, benchmark="pcgrad",
          note="training tokens per second, annealed sampler over PCGrad; 'way' and 'simpler' are not tested"),
    Claim("smart", 'SMART "did not really influence" the results', NO_EFFECT,
          _each(["hidden_gradvac_smart"], "hidden_gradvac"),
          _each(["hidden_gradvac_smart"], "hidden_gradvac", ["mean"])),
    Claim("adjustment_matrix", 'the SST adjustment matrix "did not really influence" the results', NO_EFFECT,
          _each(["pal_after_adjusted"], "pal_after"), note="SST only: the matrix changes nothing else"),
    Claim("cosine_para", 'cosine similarity for paraphrase "had no relevant impact"', NO_EFFECT,
          _each(["embedding_cosine"], "embedding_concat", ["para"]),
          _each(["embedding_cosine"], "embedding_concat", ["sts"]),
          note="on para, the claim's task, although the backbone was trained on Quora pairs"),
    *(_title(task) for task in ("sst", "para", "sts")),
)


def primary_comparisons(claims: Sequence[Claim] = CLAIMS) -> pd.DataFrame:
    """Every claim's primary comparisons as data, one row each: claim, experiment, reference,
    metric, direction, statistic (for tables that follow the claims, e.g. Δ along a budget)."""
    return pd.DataFrame([{"claim": c.name, "experiment": p.experiment, "reference": p.reference, "metric": p.metric,
                          "direction": c.direction, "statistic": c.statistic} for c in claims for p in c.primary],
                        columns=["claim", "experiment", "reference", "metric", "direction", "statistic"])


# ---------------------------------------------------------------------------------------
# Verdicts

def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise KeyError(f"unknown direction {direction!r}; known: {list(DIRECTIONS)}")


def resolution(direction: str, result: Interval, margin: float = math.nan) -> tuple[float, str]:
    """(p, what a p below :data:`ALPHA` resolves the comparison to) (module docstring): for a
    directional claim the two-sided p of Δ = 0 and confirmed/contradicted by Δ's sign; for a
    'no effect' claim the smaller of the equivalence and minimum-effect p against ``margin``."""
    _check_direction(direction)
    if direction == NO_EFFECT:
        inside, outside = equivalence_p(result, margin), minimum_effect_p(result, margin)
        if math.isnan(inside):
            return math.nan, NOT_RESOLVABLE
        return (inside, CONFIRMED) if inside <= outside else (outside, CONTRADICTED)
    sign = 1 if direction == BETTER else -1
    return difference_p(result), CONFIRMED if sign * result.estimate > 0 else CONTRADICTED


def decide(p: float, side: str) -> str:
    """``side`` when ``p`` < :data:`ALPHA`, otherwise (or for NaN) not resolvable."""
    return side if p < ALPHA else NOT_RESOLVABLE


def verdict(direction: str, lo: float, hi: float, margin: float) -> str:
    """The uncorrected verdict read off a 95% interval [lo, hi] (what :func:`resolution`'s p
    decides at the 5% level): for the report's own numbers, which have no p."""
    _check_direction(direction)
    if math.isnan(lo) or math.isnan(hi):
        return NOT_RESOLVABLE
    if direction == NO_EFFECT:
        if -margin <= lo and hi <= margin:
            return CONFIRMED
        return CONTRADICTED if lo > margin or hi < -margin else NOT_RESOLVABLE
    if direction == WORSE:
        lo, hi = -hi, -lo
    return CONFIRMED if lo > 0 else CONTRADICTED if hi < 0 else NOT_RESOLVABLE


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-corrected p-values of the finite entries of ``pvalues`` as one family (NaN stay NaN)."""
    p = np.asarray(pvalues, float)
    out = np.full(len(p), np.nan)
    finite = ~np.isnan(p)
    if finite.any():
        out[finite] = multipletests(p[finite], alpha=ALPHA, method="holm")[1]
    return out


def combine(verdicts: Sequence[str]) -> str:
    """A claim's verdict from its primary comparisons' (the combination rule, :data:`RULE`)."""
    ran = [v for v in verdicts if v != NOT_RUN]
    if not ran:
        return NOT_RUN
    overall = (CONFIRMED if all(v == CONFIRMED for v in ran) else CONTRADICTED if all(v == CONTRADICTED for v in ran)
               else NOT_RESOLVABLE)
    return overall if len(ran) == len(verdicts) else f"{overall} (on the {len(ran)} of {len(verdicts)} comparisons run)"


# ---------------------------------------------------------------------------------------
# Measuring the comparisons

def _paired_seeds(frame: pd.DataFrame, names: Sequence[str], column: str) -> list[int]:
    present = frame[frame["experiment"].isin(names) & frame[column].notna()]
    return sorted(set.intersection(*(set(present.loc[present["experiment"] == n, "seed"].astype(int)) for n in names)))


def dev_difference(comparison: Comparison, runs: pd.DataFrame, replicates: Replicates) -> Interval | None:
    """The paired Δ of dev scores over the seeds at which both experiments have the metric,
    with its 95% interval (seeds and dev sample), as the results table computes a row's Δ
    to its parent; None if either side did not run."""
    seeds = _paired_seeds(runs, (comparison.experiment, comparison.reference), comparison.metric)
    if not seeds:
        return None
    return seed_interval(replicates, comparison.metric, comparison.experiment, seeds, comparison.reference)


def speed_difference(comparison: Comparison, runs: pd.DataFrame) -> Interval | None:
    """The paired log ratio of :data:`SPEED_COLUMN` (experiment over reference) over the seeds
    both ran, with its t-interval over seeds; None if either side has no fine-tuned run."""
    if SPEED_COLUMN not in runs:
        return None
    speeds = runs[runs[SPEED_COLUMN].astype(float) > 0]
    seeds = _paired_seeds(speeds, (comparison.experiment, comparison.reference), SPEED_COLUMN)
    if not seeds:
        return None
    per_seed = speeds.assign(seed=speeds["seed"].astype(int)).set_index(["experiment", "seed"])[SPEED_COLUMN]
    return interval([math.log(per_seed[(comparison.experiment, s)] / per_seed[(comparison.reference, s)])
                     for s in seeds])


def curve_window(histories: pd.DataFrame, names: Sequence[str], seeds: Sequence[int]) -> tuple[float, float]:
    """(start, stop) examples seen of the common window: from the latest first evaluation of
    the runs to the fewest examples any of them saw by its last evaluation."""
    runs = histories[histories["experiment"].isin(names) & histories["seed"].isin(seeds)]
    per_run = runs.groupby(["experiment", "seed"])["examples"]
    return float(per_run.min().max()), float(per_run.max().min())


def curve_difference(comparison: Comparison, histories: pd.DataFrame) -> tuple[Interval | None, str]:
    """The paired Δ of the mean validation score over the common window (the area under the
    curve over its width; module docstring) and a note naming the window; (None, note) if a
    side has no history."""
    column = "mean" if comparison.metric == "mean" else metric_key(comparison.metric)
    names = (comparison.experiment, comparison.reference)
    if column not in histories:
        return None, f"no {column} in the validation history"
    seeds = _paired_seeds(histories, names, column)
    if not seeds:
        return None, "no validation history"
    present = histories[histories[column].notna()]
    start, stop = curve_window(present, names, seeds)
    if start >= stop:
        return Interval(math.nan, math.nan, math.nan, len(seeds)), (
            f"no common window: a run is first evaluated after {start:,.0f} examples, when another has "
            f"stopped ({stop:,.0f}); evaluate more often")
    areas = {n: [curve_mean(*_curve(present, n, s, column), start, stop) for s in seeds] for n in names}
    return (interval([a - b for a, b in zip(areas[names[0]], areas[names[1]])]),
            f"validation {column} averaged over examples {start:,.0f}–{stop:,.0f}")


def _curve(histories: pd.DataFrame, experiment: str, seed: int, column: str):
    run = histories[(histories["experiment"] == experiment) & (histories["seed"] == seed)]
    return run["examples"].to_numpy(float), run[column].to_numpy(float)


def report_difference(comparison: Comparison, rows: Mapping) -> tuple[float, float, float]:
    """(report's Δ, its experiment's number, its reference's number) from the rows' report
    rows (:func:`mtlib.study.report.report_row`); NaN where either has no report row."""
    index = list(METRICS).index(comparison.metric)
    numbers = [report_row(rows.get(name))[1][index] for name in (comparison.experiment, comparison.reference)]
    return numbers[0] - numbers[1], numbers[0], numbers[1]


def schedule_note(schedule: str, epochs: int, report_epochs: int) -> str:
    """What a claim's epoch schedule (a key of :data:`SCHEDULES`) gets at ``epochs`` against the
    report's ``report_epochs``; empty when the profile trains at least as many epochs."""
    if epochs >= report_epochs:
        return ""
    name, value = SCHEDULES[schedule]
    ours = ", ".join(f"{value(e, epochs):.2f}" for e in range(1, epochs + 1))
    theirs = ", ".join(f"{value(e, report_epochs):.2f}" for e in range(1, report_epochs + 1))
    return (f"the mechanism has less room than the report gave it: {name} per epoch is {ours} over this profile's "
            f"{epochs} epoch(s), against {theirs} over the report's {report_epochs}")


def benchmark_note(combiner: str, paths: Sequence[str | Path]) -> str:
    """The cost of one ``combiner`` update against a plainly summed one on the same batches of
    every task, as each benchmarks.bench_combiners JSON of ``paths`` measured it (its
    ``ratios_vs_sum``, median update time); empty without such a file."""
    import json

    found = []
    for path in sorted(map(Path, paths)):
        ratios = json.loads(path.read_text()).get("ratios_vs_sum", {})
        if combiner in ratios:
            found.append(f"×{ratios[combiner]['median_step']:.2f} ({path.name})")
    if not found:
        return ""
    return (f"benchmarks, the same batches of every task: a {combiner} update costs {', '.join(found)} "
            "a plainly summed one")


def profile_epochs(params: str | Path, experiment: str, profile: str) -> tuple[int, int]:
    """(epochs of ``experiment`` on ``profile``, epochs on :data:`REPORT_PROFILE`) from params.yaml."""
    return (load_config(params, experiment, profile).train.epochs,
            load_config(params, experiment, REPORT_PROFILE).train.epochs)


# ---------------------------------------------------------------------------------------
# The scorecard

SCORECARD_COLUMNS = ["claim", "words", "direction", "role", "statistic", "experiment", "reference", "metric", "n",
                     "estimate", "lo", "hi", "sd", "dev_se", "se", "df", "test", "p", "p_holm", "mde", "mde_seed",
                     "mde_floor", "margin", "report_diff", "report_experiment", "report_reference",
                     "verdict_uncorrected", "verdict", "claim_verdict", "note"]


def _measure(claim: Claim, comparison: Comparison, runs, replicates, histories) -> tuple[Interval | None, str]:
    if claim.statistic == CURVE:
        return (None, "no validation history given") if histories is None else curve_difference(comparison, histories)
    if claim.statistic == SPEED:
        return (None if runs is None else speed_difference(comparison, runs)), ""
    return (None if runs is None else dev_difference(comparison, runs, replicates)), ""


def _line(claim: Claim, comparison: Comparison, role: str, runs, replicates, histories, rows) -> dict:
    result, note = _measure(claim, comparison, runs, replicates, histories)
    # the report's numbers are dev scores: beside a dev comparison only
    report = report_difference(comparison, rows) if claim.statistic == DEV else (math.nan,) * 3
    measured = {} if result is None else {k: getattr(result, k) for k in MEASURED}
    return {"claim": claim.name, "words": claim.words, "direction": claim.direction, "role": role,
            "statistic": claim.statistic, "experiment": comparison.experiment, "reference": comparison.reference,
            "metric": comparison.metric, "ran": result is not None, **measured, "report_diff": report[0],
            "report_experiment": report[1], "report_reference": report[2], "note": note}


#: The :class:`Interval` fields a measured comparison carries into the scorecard.
MEASURED = ("estimate", "lo", "hi", "n", "sd", "dev_se", "df")


#: The null hypothesis each p tests, by (direction, what rejecting it resolves the comparison to).
TESTS = {**{(d, v): "H0: Δ = 0" for d in (BETTER, WORSE) for v in (CONFIRMED, CONTRADICTED)},
         (NO_EFFECT, CONFIRMED): "H0: |Δ| ≥ margin", (NO_EFFECT, CONTRADICTED): "H0: |Δ| ≤ margin",
         **{(d, NOT_RESOLVABLE): "–" for d in DIRECTIONS}}


def decide_all(measured: pd.DataFrame) -> pd.DataFrame:
    """The verdict columns from the measured ones (module docstring), row by row and then as a
    family: ``measured`` has claim, direction, role (PRIMARY / SECONDARY), ran (False: not run)
    and the :data:`MEASURED` fields of each comparison's interval; added are se, p, p_holm
    (primary rows; NaN for secondary), mde, mde_seed, mde_floor, margin ('no effect' claims),
    test (the p's null hypothesis), verdict_uncorrected, verdict (Holm p for primary rows,
    uncorrected for secondary) and claim_verdict (:func:`combine` of the claim's primary verdicts)."""
    out = measured.copy().reset_index(drop=True)
    computed, sides = [], []
    for line in out.to_dict("records"):
        result = Interval(**{k: (0 if k == "n" else math.nan) if pd.isna(line.get(k)) else line[k] for k in MEASURED})
        mde, mde_seed, floor = detectable_parts(result.sd, int(result.n), result.dev_se)
        margin = mde if line["direction"] == NO_EFFECT else math.nan
        p, side = resolution(line["direction"], result, margin)
        computed.append({"se": result.se, "p": p, "mde": mde, "mde_seed": mde_seed, "mde_floor": floor,
                         "margin": margin, "test": TESTS[line["direction"], side]})
        sides.append(side)
    for column, values in pd.DataFrame(computed, index=out.index).items():
        out[column] = values
    ran = out["ran"].astype(bool)
    out.loc[~ran, "p"] = math.nan  # a comparison not run is no member of the family
    out["p_holm"] = math.nan
    primary = out.index[out["role"] == PRIMARY]
    out.loc[primary, "p_holm"] = holm(out.loc[primary, "p"].astype(float).to_numpy())
    counted = out["p_holm"].where(out["role"] == PRIMARY, out["p"])
    out["verdict_uncorrected"] = [decide(p, side) if r else NOT_RUN for p, side, r in zip(out["p"], sides, ran)]
    out["verdict"] = [decide(p, side) if r else NOT_RUN for p, side, r in zip(counted, sides, ran)]
    overall = {claim: combine(list(group.loc[group["role"] == PRIMARY, "verdict"]))
               for claim, group in out.groupby("claim", sort=False)}
    out["claim_verdict"] = out["claim"].map(overall)
    return out


def judge(runs: pd.DataFrame | None, replicates: Replicates | None, histories: pd.DataFrame | None = None,
          rows: Mapping | None = None, claims: Sequence[Claim] = CLAIMS, params: str | Path | None = None,
          profile: str | None = None, benchmarks: Sequence[str | Path] = ()) -> pd.DataFrame:
    """One row per (claim, comparison) of :data:`SCORECARD_COLUMNS`, each claim's primary
    comparisons first: Δ (``estimate``) over ``n`` paired seeds with its 95% interval, SE and
    degrees of freedom, the uncorrected p and (primary only) the Holm p across every primary
    comparison of ``claims``, the MDE with its seed part and dev-sample floor, the equivalence
    margin of 'no effect' claims, the report's Δ and numbers, the verdicts (:func:`decide_all`)
    and the claim's. ``runs``: mtlib.study.report.collect_runs; ``replicates``:
    mtlib.study.report.bootstrap_runs; ``histories``: mtlib.study.report.collect_histories
    (learning speed); ``rows``: params.yaml's experiments (the report's numbers; read from
    ``params`` when not given); ``params`` and ``profile``: where the epochs of the schedule
    notes come from (no notes without them); ``benchmarks``: bench_combiners JSON files whose
    measured cost per update the cost claim's note shows (:func:`benchmark_note`)."""
    rows = rows if rows is not None else (read_params(params)["experiments"] if params else {})
    lines = [_line(claim, comparison, role, runs, replicates, histories, rows)
             for claim in claims
             for role, comparisons in ((PRIMARY, claim.primary), (SECONDARY, claim.secondary))
             for comparison in comparisons]
    card = decide_all(pd.DataFrame(lines, columns=[*SCORECARD_COLUMNS, "ran"]))
    notes = {claim.name: [claim.note, _schedule_note(claim, params, profile),
                          benchmark_note(claim.benchmark, benchmarks) if claim.benchmark else ""] for claim in claims}
    card["note"] = ["; ".join(x for x in (*notes[c], n) if isinstance(x, str) and x)
                    for c, n in zip(card["claim"], card["note"])]
    card["n"] = card["n"].fillna(0).astype(int)
    return card[SCORECARD_COLUMNS]


def _schedule_note(claim: Claim, params, profile) -> str:
    if claim.schedule is None or params is None or profile is None:
        return ""
    experiment = next((c.experiment for c in claim.primary if c.experiment in read_params(params)["experiments"]), None)
    return "" if experiment is None else schedule_note(claim.schedule, *profile_epochs(params, experiment, profile))


def power_table(scorecard: pd.DataFrame) -> pd.DataFrame:
    """Per primary comparison that ran: its paired seeds, the sd of per-seed Δ, the dev-sample
    SE of Δ, and the MDE (5% level, 80% power) with its seed part and its dev-sample floor
    (which no number of seeds lowers), each comparison on its own: coupled pairs (a post-hoc
    row against its parent) and independently trained ones are never pooled."""
    ran = scorecard[(scorecard["role"] == PRIMARY) & (scorecard["verdict"] != NOT_RUN)].copy()
    ran["comparison"] = ran["experiment"] + " − " + ran["reference"]
    return ran[["claim", "comparison", "metric", "statistic", "n", "sd", "dev_se", "mde", "mde_seed",
                "mde_floor"]].reset_index(drop=True)


# ---------------------------------------------------------------------------------------
# Markdown

def _number(line: Mapping, value: float, signed: bool = True) -> str:
    if math.isnan(value):
        return "–"
    if line["statistic"] == SPEED:  # a log ratio: shown as the ratio
        return f"×{math.exp(value):.2f}"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _delta(line: Mapping) -> str:
    if line["verdict"] == NOT_RUN:
        return "not run"
    bounds = "" if math.isnan(line["lo"]) else f" [{_number(line, line['lo'])}, {_number(line, line['hi'])}]"
    return f"{_number(line, line['estimate'])}{bounds}"


def _p(value: float) -> str:
    return "–" if math.isnan(value) else "<0.001" if value < 0.001 else f"{value:.3f}"


def _p_cell(line: Mapping, column: str = "p") -> str:
    """The p of ``column``; for a 'no effect' line, which test it is (module docstring)."""
    text = _p(line[column])
    if line["direction"] != NO_EFFECT or text == "–":
        return text
    return f"{text} ({line['test']})"


def _mde(line: Mapping) -> str:
    if math.isnan(line["mde"]):
        return "–"
    return (f"{_number(line, line['mde'], False)} ({_number(line, line['mde_seed'], False)}, "
            f"{_number(line, line['mde_floor'], False)})")


def _comparison(line: Mapping) -> str:
    what = "" if line["statistic"] == DEV else f", {line['statistic']}"
    return f"{line['experiment']} − {line['reference']} ({line['metric']}{what}; {line['n']} seeds)"


def _theirs(line: Mapping) -> str:
    if math.isnan(line["report_diff"]):
        return "–"
    return f"{line['report_experiment']:.3f} vs {line['report_reference']:.3f} ({line['report_diff']:+.3f})"


LEGEND = (f"One line per claim. Δ = experiment − reference, paired by seed, with its 95% interval (seeds and dev "
          f"sample); p: its uncorrected p-value; Holm p: corrected across every primary comparison of the scorecard; "
          f"MDE: the smallest true Δ this comparison detects with 80% power at the 5% level, then (its seed part, "
          f"its dev-sample floor, which no number of seeds lowers). A directional claim is confirmed when the Holm p "
          f"is below {ALPHA:g} and Δ has the claimed sign, contradicted when it is below {ALPHA:g} with the other "
          f"sign; a 'no effect' claim is judged against a margin equal to its comparison's MDE: confirmed when the "
          f"interval lies within ±margin, contradicted when it lies wholly outside (Holm p of that test below "
          f"{ALPHA:g}); otherwise not resolvable. Primary metrics are SST wherever the claim allows: the backbone "
          f"was trained on Quora pairs. Combination rule for claims with several primary comparisons: {RULE}. "
          f"Training-speed lines show ratios.")


BUDGET_HEADING = "## Against the training budget"
BUDGET_INTRO = ("Each claim's first primary comparison, paired by seed on the validation score it is judged on: "
                "its Δ at the runs' first and last validation points and at the last validation point of the "
                "budget study's longer runs, where its experiments were in that study, with 95% t-intervals over "
                "the seeds (n); and how the Δ moves from the shorter budget to the longer one named in brackets: "
                "holds (resolved with the same sign at both, or unresolved at both), appears (resolved only at "
                "the longer), vanishes (resolved only at the shorter) or reverses (resolved at both, opposite signs).")


def budget_markdown(scorecard: pd.DataFrame, columns: pd.DataFrame) -> str:
    """The scorecard's budget section from :func:`judge`'s frame and
    :func:`mtlib.study.budget.budget_columns` of its primary comparisons: one row per claim with
    a validation curve to follow, its verdict first, then the claims without one, each with
    why (measured by training speed, or no validation history in its runs)."""
    claims = scorecard.groupby("claim", sort=False)[["claim_verdict", "statistic"]].first()
    counts = [f"{prefix}_n" for prefix in (budget.FIRST, budget.LAST, budget.LONGER)]
    followed = [c for c in claims.index if c in columns.index and columns.loc[c, counts].astype(bool).any()]
    table = columns.loc[followed].assign(claim_verdict=claims.loc[followed, "claim_verdict"])
    text = BUDGET_INTRO + "\n\n" + budget.stability_markdown(table)
    why = {SPEED: f"measured by {SPEED}"}
    left = [f"{c} ({why.get(claims.loc[c, 'statistic'], 'its runs keep no validation history')})"
            for c in claims.index if c not in followed]
    return text + ("\n\nNo validation curve to follow: " + "; ".join(left) + "." if left else "")


def scorecard_markdown(scorecard: pd.DataFrame, against_budget: str = "") -> str:
    """:func:`judge`'s frame as Markdown: the legend, one line per claim (several primary
    comparisons share a cell, one per line), then the secondary comparisons, then
    ``against_budget`` (:func:`budget_markdown`) under its heading where given."""
    body = []
    for _, group in scorecard.groupby("claim", sort=False):
        first = group.iloc[0]
        records = group[group["role"] == PRIMARY].to_dict("records")
        words = first["words"] + (f" ({first['note']})" if first["note"] else "")

        def cells(f):
            return "<br>".join(map(f, records))
        margin = cells(lambda r: _number(r, r["margin"], False)) if first["direction"] == NO_EFFECT else "–"
        rule = "one comparison" if len(records) == 1 else f"all {len(records)} must agree"
        body.append([words, cells(_comparison), cells(_theirs), cells(_delta), cells(_p_cell),
                     cells(lambda r: _p_cell(r, "p_holm")), cells(_mde), margin, rule,
                     f"**{first['claim_verdict']}**"])
    lines = markdown_rows(["claim", "primary comparison", "the report", "Δ [95% interval]", "p", "Holm p",
                           "MDE (seed part, floor)", "margin", "rule", "verdict"], body)
    secondary = scorecard[scorecard["role"] == SECONDARY].to_dict("records")
    extra = markdown_rows(["claim", "secondary comparison", "the report", "Δ [95% interval]", "p", "MDE", "verdict"],
                          [[r["claim"], _comparison(r), _theirs(r), _delta(r), _p_cell(r), _mde(r), r["verdict"]]
                           for r in secondary])
    return (LEGEND + "\n\n" + "\n".join(lines) + "\n\n## Secondary comparisons (shown, not deciding; uncorrected)\n\n"
            + "\n".join(extra) + "\n" + (f"\n{BUDGET_HEADING}\n\n{against_budget}\n" if against_budget else ""))
