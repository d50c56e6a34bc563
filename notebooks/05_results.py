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
benchmarks_dir = "benchmarks/results"  # bench_combiners JSON: the cost of a surgery update
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
# ## What the backbone knew
#
# all-MiniLM-L6-v2 was trained on Quora duplicate questions, the source of this study's
# 42,149-pair Quora training subset and of its Quora dev pairs, and on NLI pairs: the pair
# tasks are contaminated, not just easy. The untrained backbone's cosine similarity (row
# `frozen_cosine`) measures how much of a pair-task score was there before any training.

# %% tags=["hide-input"]
from mtlib.study.provenance import backbone_caveat, backbone_head_start

Markdown(backbone_caveat(backbone_head_start(summary, list(fine_tuned.index))))

# %% [markdown]
# ## What the intervals are made of
#
# For each row: the half-width of its interval from the seeds alone, from the dev sample
# alone, and from both; the same for its Δ to the row it builds on.

# %% tags=["hide-input"]
display(report.interval_sources(summary).round(4))

# %% [markdown]
# ## The report's claims, judged
#
# Each claim is judged on comparisons declared before any run was read: a primary one (SST
# wherever the claim allows, since the backbone was trained on Quora pairs) that decides, with
# its p-value Holm-corrected across every claim's primary comparison, and secondary ones that
# are shown and do not decide. The legend above the table states every rule.

# %%
histories = report.collect_histories(runs_dir)
profile = runs["profile"].dropna().iloc[0] if runs["profile"].notna().any() else None
card = scorecard.judge(runs, replicates, histories, rows, params=params, profile=profile,
                       benchmarks=sorted(Path(benchmarks_dir).glob("bench_combiners_*.json")))
budget_histories = report.collect_histories(budget_dir)  # the budget study's runs (notebook 07)
against_budget = scorecard.budget_markdown(
    card, budget.budget_columns(budget.primary_comparisons(card), histories, budget_histories))
write_text(scorecard_md, scorecard.scorecard_markdown(card, against_budget))

# %% tags=["hide-input"]
Markdown(scorecard.scorecard_markdown(card))  # results/scorecard.md less its budget section, shown below

# %% [markdown]
# ## What each comparison can detect
#
# Per primary comparison: the smallest true Δ it detects with 80% power at the 5% level
# (uncorrected; the Holm correction asks for more), from that comparison's own per-seed spread
# and dev-sample SE, never pooled over other pairs (a post-hoc row against its parent varies
# far less than two independently trained rows). The seed part is what more seeds would lower;
# the floor is the dev sample's share, which no number of seeds lowers, only a larger dev set.
# Training-speed lines are in log ratio units; validation-curve lines have no dev part.

# %% tags=["hide-input"]
display(scorecard.power_table(card).round(4))

# %% [markdown]
# ## This study beside the report

# %% tags=["hide-input"]
figures.plot_report_comparison(summary, f"{figures_dir}/05_report_comparison.png", run=plotting.run_caption(runs))

# %% [markdown]
# ## Score against task-specific parameters
#
# Everything but the heads (and PALs) is shared; the x-axis counts what each task owns.

# %% tags=["hide-input"]
figures.plot_score_vs_parameters(summary, f"{figures_dir}/05_score_vs_parameters.png", run=plotting.run_caption(runs))

# %% [markdown]
# ## Master of all trades or jack of none? One shared encoder against one model per task
#
# For each task, the multitask BaseModel (`base_model`) minus a model trained on that task
# alone, on the task's dev metric: at equal examples of the task seen (`single_<task>_matched`:
# as many of its batches as base_model's sampler gave it, seed by seed) and at equal total
# compute (`single_<task>`: the whole micro-batch budget on the one task). Each Δ is paired by
# seed and by dev example (mtlib/study/single_task.py); right of 0 the shared encoder is ahead.

# %%
from mtlib.study import single_task

title_question = single_task.compare(runs, replicates)
title_counts = single_task.parameter_counts(runs)

# %% tags=["hide-input"]
display(Markdown(single_task.comparison_markdown(title_question, title_counts)))
single_task.plot_single_task(title_question, f"{figures_dir}/05_single_task.png")

# %% [markdown]
# ## Learning curves
#
# Validation mean against training examples seen, mean ± std over seeds, one figure per
# family of experiments, each drawn beside the rows it builds on. The random predictor and
# the frozen-encoder heads do not fine-tune, and single-task runs have no mean: they are in
# the table only. A run that starts from another one's weights (`pal_after`, `continued`,
# `continued_heads`) is drawn on its start's axis: its examples count on from those its
# start had seen at the checkpoint it starts from.

# %%
groups = analysis.curve_groups(rows, sorted(set(histories["experiment"])))

# %% tags=["hide-input"]
for group, names in groups.items():
    shown = analysis.select_experiments(histories, names)
    display(plotting.plot_learning_curves(shown, f"{figures_dir}/05_learning_curves/{group}.png",
                                          title=f"Validation mean during training: {group}",
                                          run=plotting.run_caption(shown, profile)))

# %% [markdown]
# ## Gradient Compromise against the annealed sampler
#
# The report's Figure 5 claims Gradient Compromise learns much faster in the first epochs.
# Examples seen is the fair x-axis: one Gradient Compromise update consumes a whole group of
# batches. The scorecard's learning-speed line compares the two curves by their area over the
# whole run both cover (the mean validation score at matched examples seen).

# %% tags=["hide-input"]
pair = histories[histories["experiment"].isin([compromise, annealed])]
(figures.plot_compromise_vs_annealed(histories, f"{figures_dir}/05_compromise_vs_annealed.png",
                                     compromise=compromise, annealed=annealed, run=plotting.run_caption(pair, profile))
 if {compromise, annealed} <= set(histories["experiment"]) else
 Markdown(f"`{compromise}` or `{annealed}` did not run on this profile."))

# %% [markdown]
# ## The training budget
#
# The budget study (notebook 07): the experiments of the claims this profile contradicted or
# could not resolve, trained for a multiple of the profile's budget, scored on validation
# after every multiple of it.

# %% tags=["hide-input"]
factor = int(budget_histories.groupby(["experiment", "seed"]).size().max()) if len(budget_histories) else 1
plotting.plot_learning_curves(budget_histories, f"{figures_dir}/05_budget.png", metric="mean",
                              title=f"Validation mean against training examples seen, to {factor}x the profile's budget",
                              run=plotting.run_caption(budget_histories, profile))

# %% [markdown]
# ### Verdicts against the budget
#
# The scorecard's last section (results/scorecard.md; mtlib.study.budget computes it):

# %% tags=["hide-input"]
Markdown(against_budget)  # as results/scorecard.md holds it

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
