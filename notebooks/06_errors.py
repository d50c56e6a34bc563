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
# # 06 Error analysis
#
# The predictions of one run on the dev set, joined with the text: the SST confusion
# matrix, the worst errors of each task (as in the report's error-analysis table) ranked by
# a real margin, errors grouped into kinds by stated rules, and errors by input length and
# by class.

# %% tags=["parameters"]
experiment = ""                  # empty: the experiment with the best dev mean over its seeds
exclude = "random_predictor"     # comma-separated experiments never chosen as "best"
seed = 1
runs_dir = "results/runs"
figures_dir = "figures"
n_worst = 5

# %%
# %matplotlib inline
import pandas as pd
from IPython.display import Markdown, display

from mtlib.study import analysis, figures, plotting
from mtlib.study.report import collect_runs
from mtlib.tasks import TASKS
from mtlib.study.provenance import runs_header

runs = collect_runs(runs_dir)
chosen = experiment or analysis.best_experiment(runs, exclude=exclude.split(","))
run_dir = f"{runs_dir}/{chosen}/seed{seed}"
frames = {task: analysis.read_predictions(run_dir, task) for task in TASKS}
mean = runs[runs["experiment"] == chosen]["mean"].mean()

# %% tags=["hide-input"]
display(Markdown(runs_header([f"{run_dir}/metrics.json"])), Markdown(
    f"Run `{run_dir}`: " + ("the experiment chosen by hand" if experiment else
                            f"the best dev mean over its seeds ({mean:.3f})") +
    f"; dev examples scored: {', '.join(f'{task} {len(frame):,}' for task, frame in frames.items())}."))

# %% [markdown]
# ## SST confusion matrix

# %%
sst = frames["sst"]
true, predicted, share = analysis.most_confused(sst["label"], sst["prediction"])

# %% tags=["hide-input"]
display(Markdown(
    f"SST accuracy {sst['correct'].mean():.3f}. The most frequent confusion: {share:.0%} of the *{true}* "
    f"sentences are predicted *{predicted}*; {(sst['abs_error'] >= 2).mean():.1%} of all predictions are two "
    "or more classes off."))
figures.plot_confusion_matrix(sst["label"], sst["prediction"], f"{figures_dir}/06_sst_confusion.png",
                              run=plotting.run_caption(runs[(runs["experiment"] == chosen) & (runs["seed"] == seed)]))

# %% [markdown]
# ## The worst errors, their kinds, and errors by length and by class, per task
#
# The worst errors are ranked by a margin: for SST and Quora, the model's probability of
# the wrong class it predicted (its most confident mistakes first), for STS the distance
# |prediction − gold|. The text is shown in full. Each error kind is a rule, applied to every
# dev example: *negation* (a negating word such as not, no, never or n't in the input),
# *long* (an input at or above the task's 75th percentile of words), *label noise* (an
# error made with probability 0.9 or more, or an STS prediction 2.5 or more off: candidates
# whose gold label deserves a second look, not proven mislabelled). An STS "error" is a
# prediction one point or more from gold. A kind is harder than the rest when its error
# rate (with) exceeds the rate of the other examples (without).

# %%
for task, frame in frames.items():
    if TASKS[task].integer_labels and "probability" not in frame:
        display(Markdown(f"*{task}: this run stored no probabilities (an older run, or one that scores no "
                         "model): its errors are ranked by class distance alone, which ties.*"))
    with pd.option_context("display.max_colwidth", None):
        display(Markdown(f"### {task}: worst errors"),
                analysis.with_label_names(analysis.worst_errors(frame, task, n_worst), task))
    display(Markdown(f"### {task}: errors by kind"), analysis.error_kind_counts(frame, task).round(3),
            Markdown(f"### {task}: errors by input length"), analysis.errors_by_length(frame, task),
            Markdown(f"### {task}: errors by class"), analysis.errors_by_class(frame, task))

# %%
by_length = {task: analysis.errors_by_length(frame, task) for task, frame in frames.items()}

# %% tags=["hide-input"]
Markdown(
    "From the shortest to the longest quarter of inputs, SST accuracy goes from "
    f"{by_length['sst']['accuracy'].iloc[0]:.3f} to {by_length['sst']['accuracy'].iloc[-1]:.3f}, Quora accuracy from "
    f"{by_length['para']['accuracy'].iloc[0]:.3f} to {by_length['para']['accuracy'].iloc[-1]:.3f}, and the STS "
    f"mean absolute error from {by_length['sts']['mean_abs_error'].iloc[0]:.2f} to "
    f"{by_length['sts']['mean_abs_error'].iloc[-1]:.2f}.")
