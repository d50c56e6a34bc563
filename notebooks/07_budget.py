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
# # 07 The training budget
#
# Are the study's verdicts "learns faster in the first examples" or "ends better"? The
# experiments of the claims the study contradicts or cannot resolve at the profile's budget
# (`experiments` below: the annealed schedule, base_annealed against base_model; the
# augmentation, augmented against hidden; individual head pretraining, advanced_model against
# augmented; and hidden, which augmented builds on) are trained again for `budget_factor`
# times the profile's epochs, each of the profile's micro-batches per epoch, so that the
# annealed sampler, which changes its task weights once per epoch, anneals over as many
# epochs as the budget has. Each run is scored on the validation split (held out of the
# training data) after every multiple of the profile's budget, and on dev once, at the end,
# with the checkpoint its validation split selected. Notebook 05 reads these runs for the
# scorecard's budget columns (mtlib.study.budget).

# %% tags=["parameters"]
profile = None                                   # smoke, cpu or paper; None: params.yaml's `profile`
experiments = "base_model,base_annealed,hidden,augmented,advanced_model"   # the budget study's rows
seeds = "1,2,3"
budget_factor = 4                                # times the profile's epochs (of its micro-batches per epoch)
workers = 0                                      # runs at once; 0: one per free core on a CPU
params = "params.yaml"
runs_dir = "results/budget"
figure_path = "results/budget/curves.png"

# %% tags=["hide-input"]
from IPython.display import Markdown

from mtlib.study.provenance import config_header

Markdown(config_header(params, experiments, profile, seeds))

# %%
# %matplotlib inline
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto without ipywidgets
import pandas as pd
from IPython.display import Markdown, display

from mtlib.config import load_config, read_params, resolve_seeds, with_overrides
from mtlib.study import budget, plotting
from mtlib.record import RunRecord, read_history
from mtlib.training.sweep import Job, train_many

seeds = resolve_seeds(seeds, params)
studied = experiments.split(",")
default = load_config(params, studied[0], profile, seeds[0]).train
profile_batches = default.epochs * default.batches_per_epoch   # micro-batches of a study run
jobs = []
for experiment in studied:
    for seed in seeds:
        cfg = load_config(params, experiment, profile, seed)
        cfg = with_overrides(cfg, [f"train.epochs={cfg.train.epochs * budget_factor}",
                                   f"train.eval_every={cfg.train.epochs * cfg.train.batches_per_epoch}",
                                   "train.patience=null", "train.keep_checkpoint=false"])
        jobs.append(Job(cfg, Path(runs_dir) / experiment / f"seed{seed}", overwrite=True))
records = [RunRecord.from_json(content) for content in train_many(jobs, workers)]

# %% tags=["hide-input"]
Markdown(
    f"**What was run.** {len(studied)} experiments ({', '.join(studied)}), seeds {', '.join(map(str, seeds))}: "
    f"{len(jobs)} runs of {default.epochs * budget_factor} epochs of {default.batches_per_epoch} micro-batches "
    f"({budget_factor} x the profile's {profile_batches} micro-batches), each experiment with its own settings "
    f"from params.yaml, validation after every {profile_batches} micro-batches, no early stopping.")

# %%
history = pd.concat([read_history(job.out_dir) for job in jobs], ignore_index=True)
history["budget"] = history.groupby(["experiment", "seed"]).cumcount() + 1   # multiple of the profile's budget
final = pd.DataFrame([{"experiment": r.experiment, "seed": r.seed, "dev mean": r.dev["mean"],
                       "selected validation mean": r.validation["mean"], "selected at": r.best_update,
                       "updates": r.updates} for r in records])
display(final.groupby("experiment", sort=False)[["dev mean", "selected validation mean"]].agg(["mean", "std"]).round(3))
history.pivot_table(index="experiment", columns="budget", values="mean", aggfunc="mean", sort=False).round(3)

# %% tags=["hide-input"]
plotting.plot_learning_curves(history, figure_path, metric="mean",
                              title=f"Validation mean against training examples seen, to {budget_factor}x the "
                                    "profile's budget (mean ± std over seeds)")

# %% [markdown]
# Each studied experiment against its parent in params.yaml (where the parent was studied
# too), paired by seed: the Δ of the validation mean after each multiple of the profile's
# budget, with its 95% t-interval over seeds.

# %%
parents = {e: read_params(params)["experiments"][e]["parent"] for e in studied}
pairs = [(e, p) for e, p in parents.items() if p in studied]
deltas = []
for position in range(int(history["budget"].max())):
    scores = budget.point_scores(history[history["budget"] == position + 1], "mean", -1)
    for experiment, parent in pairs:
        delta = budget.paired_delta(scores, experiment, parent)
        deltas.append({"comparison": f"{experiment} − {parent}", "budget": f"{position + 1}x",
                       "delta": delta.estimate, "lo": delta.lo, "hi": delta.hi, "seeds": delta.n})
deltas = pd.DataFrame(deltas)
deltas.pivot(index="comparison", columns="budget", values="delta").round(3)

# %% tags=["hide-input"]
last = deltas[deltas["budget"] == deltas["budget"].iloc[-1]]
Markdown("At the longest budget: " + "; ".join(
    f"{r.comparison} {r.delta:+.3f} [{r.lo:+.3f}, {r.hi:+.3f}]" for r in last.itertuples())
    + ". Notebook 05 sets these beside the profile's verdicts (the scorecard's budget columns).")
