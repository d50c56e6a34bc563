# ---
# jupyter:
#   jupytext:
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 Results
#
# Every run under `results/runs/`, summarised per experiment over its seeds, beside the
# report's single-run number from its Table 2. Each row is compared with the row it builds
# on (its parent in params.yaml's `experiments`), paired by seed. Every interval is a 95%
# interval that counts both sources of noise: the seeds (how a run falls) and the dev sample
# (which examples were drawn), the latter by resampling the dev examples that all runs share.
# Dev was scored once per run, at the checkpoint the validation split (held out of the
# training data) selected.

# %% tags=["parameters"]
params = "params.yaml"
runs_dir = "results/runs"
table_csv = "results/table.csv"
table_md = "results/table.md"
scorecard_md = "results/scorecard.md"
figures_dir = "figures"
budget_dir = "results/budget"     # the budget study's runs (notebook 07)
quora_reference = 5000            # the Quora dev sample the cpu profile scored before it was cut
validation_reference = "sst=300,para=400,sts=300"   # and the validation split it used then
compromise = "hidden_compromise"  # Gradient Compromise ...
annealed = "hidden"               # ... against the annealed sampler it builds on

# %% tags=["hide-input"]
from pathlib import Path

from IPython.display import Markdown

from mtlib.study.provenance import runs_header

Markdown(runs_header(sorted(Path(runs_dir).glob("*/seed*/metrics.json"))))

# %%
# %matplotlib inline
from IPython.display import Markdown, display

from mtlib.config import read_params
from mtlib.io import write_text
from mtlib.study import analysis, budget, figures, plotting, report, scorecard, sizing
from mtlib.training.runs import read_run_config

rows = read_params(params)["experiments"]  # the table's rows, in order
runs = report.collect_runs(runs_dir)
replicates = report.bootstrap_runs(runs)  # every run's dev predictions on 2,000 resamples of the dev examples
summary = report.summarise(runs, rows, replicates)
not_run = [e for e in rows if e not in set(runs["experiment"])]
report.write_table(summary, table_csv, table_md, not_run=not_run)

# %% tags=["hide-input"]
Markdown(Path(table_md).read_text())

# %%
indexed = summary.set_index("experiment")
baseline = "head_only" if "head_only" in indexed.index else None
fine_tuned = indexed.loc[sorted(set(runs.loc[runs["updates"] > 0, "experiment"]) & set(indexed.index),
                                key=list(indexed.index).index)]
best = indexed["mean_mean"].idxmax()

# %% tags=["hide-input"]
above = [] if baseline is None else [e for e in fine_tuned.index if indexed.loc[e, "mean_mean"] > indexed.loc[baseline, "mean_mean"]]
Markdown(
    f"{len(runs)} runs of {len(indexed)} experiments. The best dev mean is **{best}**: "
    f"{indexed.loc[best, 'mean_mean']:.3f} [{indexed.loc[best, 'mean_lo']:.3f}, {indexed.loc[best, 'mean_hi']:.3f}]. "
    + ("" if baseline is None else
       f"Heads on the frozen encoder alone score {indexed.loc[baseline, 'mean_mean']:.3f} "
       f"[{indexed.loc[baseline, 'mean_lo']:.3f}, {indexed.loc[baseline, 'mean_hi']:.3f}]; "
       f"{len(above)} of the {len(fine_tuned)} fine-tuned rows score above that on the mean"
       + (f" (below it: {', '.join(e for e in fine_tuned.index if e not in above)})." if len(above) < len(fine_tuned)
          else ".")))

# %% [markdown]
# ## What the intervals are made of, and what this study can detect
#
# For each row: the half-width of its interval from the seeds alone and from the dev sample
# alone. Then the smallest true difference between two rows that this profile detects with
# 80% power at the 5% level, from the seed spread measured across all parent pairs and the
# dev sample's own variance.

# %% tags=["hide-input"]
display(report.interval_sources(summary).round(4))
Markdown(report.effects_markdown(report.detectable_effects(summary)))

# %% [markdown]
# ## The report's claims, judged
#
# One line per claim of the report, with the comparisons it rests on, our paired difference
# and its 95% interval, and a verdict: confirmed, contradicted, or not resolvable at this
# profile (rows the profile does not run say so).

# %%
histories = report.collect_histories(runs_dir)
card = scorecard.judge(runs, replicates, histories, rows)
write_text(scorecard_md, scorecard.scorecard_markdown(card))

# %% tags=["hide-input"]
Markdown(Path(scorecard_md).read_text())

# %% [markdown]
# ## This study beside the report

# %% tags=["hide-input"]
figures.plot_report_comparison(summary, f"{figures_dir}/05_report_comparison.png")

# %% [markdown]
# ## Score against task-specific parameters
#
# Everything but the heads (and PALs) is shared; the x-axis counts what each task owns.

# %% tags=["hide-input"]
figures.plot_score_vs_parameters(summary, f"{figures_dir}/05_score_vs_parameters.png")

# %% [markdown]
# ## Learning curves
#
# Validation mean against training examples seen, mean ± std over seeds, one figure per
# family of experiments, each drawn beside the rows it builds on. The random predictor and
# the frozen-encoder heads do not fine-tune, and single-task runs have no mean: they are in
# the table only.

# %%
groups = analysis.curve_groups(rows, sorted(set(histories["experiment"])))

# %% tags=["hide-input"]
for group, names in groups.items():
    display(plotting.plot_learning_curves(analysis.select_experiments(histories, names),
                                          f"{figures_dir}/05_learning_curves/{group}.png",
                                          title=f"Validation mean during training: {group}"))

# %% [markdown]
# ## Gradient Compromise against the annealed sampler
#
# The report's Figure 5 claims Gradient Compromise learns much faster in the first epochs.
# Examples seen is the fair x-axis: one Gradient Compromise update consumes a whole group of
# batches. The scorecard's learning-speed line compares the two curves over the early window.

# %% tags=["hide-input"]
(figures.plot_compromise_vs_annealed(histories, f"{figures_dir}/05_compromise_vs_annealed.png",
                                     compromise=compromise, annealed=annealed)
 if {compromise, annealed} <= set(histories["experiment"]) else
 Markdown(f"`{compromise}` or `{annealed}` did not run on this profile."))

# %% [markdown]
# ## The training budget
#
# The budget study (notebook 07): the experiments of the claims this profile contradicted or
# could not resolve, trained for a multiple of the profile's budget, scored on validation
# after every multiple of it.

# %% tags=["hide-input"]
budget_histories = report.collect_histories(budget_dir)
factor = int(budget_histories.groupby(["experiment", "seed"]).size().max()) if len(budget_histories) else 1
plotting.plot_learning_curves(budget_histories, f"{figures_dir}/05_budget.png", metric="mean",
                              title=f"Validation mean against training examples seen, to {factor}x the profile's budget")

# %% [markdown]
# ### Verdicts against the budget
#
# Each claim's primary comparison (its first line in the scorecard), paired by seed on the
# validation mean or task metric it is judged on: its Δ at the runs' first and last
# validation points, and at the last validation point of the budget study's runs where its
# experiments were studied, with 95% t-intervals over seeds, and a word for how it moves
# (mtlib.study.budget: **holds**, **appears**, **vanishes**, **reverses**).

# %%
claims = budget.primary_comparisons(card)
stability = card.groupby("claim", sort=False)[["claim_verdict"]].first().join(
    budget.budget_columns(claims, histories, budget_histories))

# %% tags=["hide-input"]
Markdown(budget.stability_markdown(stability))

# %% [markdown]
# ## What the profile's evaluation cuts cost
#
# To fit every row into one sitting, the profile scores a sample of the Quora dev file and a
# validation split smaller than it did before (`quora_reference`, `validation_reference`).
# From these runs' own predictions and histories (mtlib.study.sizing): the dev-sample
# standard error of each row's Quora Δ to its parent at the sample scored and at the
# reference sample, how much wider that makes the Δ's interval, and how checkpoint
# selection fares at the validation split's size.

# %%
labels, predictions = report.collect_predictions(runs)
pairs = [(e, rows[e]["parent"]) for e in rows
         if rows[e]["parent"] and {e, rows[e]["parent"]} <= set(runs.loc[runs["para"].notna(), "experiment"])]
quora = sizing.quora_cut_effect(runs, labels["para"], predictions["para"], pairs, quora_reference)
validation_size = read_run_config(runs["path"].iloc[0]).data.validation_size
validation_sizes = {task: validation_size[task] for task in ("sst", "para", "sts")}
selection = sizing.selection_summary(histories, validation_sizes, sizing.parse_sizes(validation_reference))
quora.round(4)

# %% tags=["hide-input"]
median = quora.median(numeric_only=True)
Markdown(
    f"**Quora dev sample.** {len(labels['para']):,} pairs scored against {quora_reference:,} before. Over the "
    f"{len(quora)} paired comparisons, the median dev-sample SE of a Quora accuracy Δ is {median['se']:.4f} "
    f"({median['se_other']:.4f} at {quora_reference:,}); on the mean of the three tasks {median['mean_se']:.4f} "
    f"({median['mean_se_other']:.4f}). With the seeds' spread, the SE of a Quora Δ is {median['para_width_ratio']:.2f}x "
    f"and of a mean Δ at most {median['mean_width_ratio']:.2f}x what it would be at {quora_reference:,} "
    f"(medians; largest {quora['mean_width_ratio'].max():.2f}x for the mean).\n\n"
    f"**Validation split** ({', '.join(f'{t} {n:,}' for t, n in validation_sizes.items())}). "
    f"{selection['selected_last']} of {selection['runs']} fine-tuned runs selected their last validation point "
    f"(median {selection['points']:.0f} points a run). The median climb of the score that counts between "
    f"consecutive points is {selection['climb']:+.4f}; one point's validation mean has a standard error of about "
    f"{selection['se']:.4f} at this size ({selection['se_other']:.4f} at {validation_reference}), so "
    + ("selection follows the learning curve, not the validation noise."
       if abs(selection["climb"]) > 2 ** 0.5 * selection["se"] else
       "the noise between two points is as large as the climb: selection among points is partly chance."))
