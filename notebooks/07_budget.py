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
# How the default profile was sized. The same experiments as the study's BaseModel and
# AdvancedModel rows, trained for twice the profile's budget and scored on the validation
# split (held out of the training data) every eighth of the way, over three seeds; the
# BaseModel also at twice the profile's learning rate. The budget and the learning rate are chosen on
# these curves, on validation, never on dev; dev is scored once, at the end of each run.

# %% tags=["parameters"]
profile = None                                   # smoke, cpu or paper; None: params.yaml's `profile`
experiments = "base_model,advanced_model"        # the rows whose budget is studied
seeds = "1,2,3"
budget_factor = 2                                # times the profile's micro-batches per epoch
evaluations = 8                                  # validation scores per run
lr_factors = "2"                                 # other learning rates (times the profile's), first experiment only
workers = 0                                      # runs at once; 0: one per free core on a CPU
params = "params.yaml"
runs_dir = "results/budget"
figure_path = "results/budget/curves.png"

# %% tags=["hide-input"]
from IPython.display import Markdown

from mtlib.study.provenance import config_header

Markdown(config_header(params, experiments.split(",")[0], profile, seeds))

# %%
# %matplotlib inline
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto without ipywidgets
import pandas as pd
from IPython.display import Markdown, display

from mtlib.config import load_config, resolve_seeds, with_overrides
from mtlib.study import plotting
from mtlib.record import RunRecord, read_history
from mtlib.training.sweep import Job, train_many

seeds = resolve_seeds(seeds, params)
default = load_config(params, experiments.split(",")[0], profile, seeds[0]).train
per_epoch = default.batches_per_epoch * budget_factor
studied = experiments.split(",")
settings = [(e, 1.0) for e in studied] + [(studied[0], float(f)) for f in lr_factors.split(",") if f]
every = max(1, default.epochs * per_epoch // evaluations)  # micro-batches between validation scores
jobs, names = [], {}
for experiment, factor in settings:
    name = experiment if factor == 1 else f"{experiment}, lr x{factor:g}"
    for seed in seeds:
        cfg = load_config(params, experiment, profile, seed)
        cfg = with_overrides(cfg, [f"train.batches_per_epoch={per_epoch}", f"train.lr={cfg.train.lr * factor}",
                                   f"train.eval_every={every}", "train.patience=null"])
        folder = Path(runs_dir) / name.replace(", lr x", "-lr") / f"seed{seed}"
        jobs.append(Job(cfg, folder, overwrite=True))
        names[folder] = name
records = [RunRecord.from_json(content) for content in train_many(jobs, workers)]

# %%
history = pd.concat([read_history(job.out_dir).assign(experiment=names[job.out_dir]) for job in jobs],
                    ignore_index=True)
final = pd.DataFrame([{"experiment": names[job.out_dir], "seed": r.seed, "dev mean": r.dev["mean"],
                       "best validation mean": r.validation["mean"]} for job, r in zip(jobs, records)])
final.groupby("experiment")[["dev mean", "best validation mean"]].agg(["mean", "std"]).round(3)

# %% tags=["hide-input"]
plotting.plot_learning_curves(history, figure_path, metric="mean",
                              title="Validation mean against training examples seen (mean ± std over seeds)")

# %%
budgets = history.groupby(["experiment", "seed"]).apply(
    lambda run: pd.Series({"profile": run[run["update"] <= run["update"].max() / budget_factor]["mean"].iloc[-1],
                           "doubled": run["mean"].iloc[-1]}), include_groups=False).groupby("experiment").mean()
budgets.assign(gain=budgets["doubled"] - budgets["profile"]).round(3)

# %% tags=["hide-input"]
Markdown(
    f"The profile trains {default.epochs} epochs of {default.batches_per_epoch} micro-batches at learning rate "
    f"{default.lr:g}. Doubling that budget changes the validation mean by "
    + "; ".join(f"{name} {row.doubled - row.profile:+.3f}" for name, row in budgets.iterrows())
    + " (mean over seeds): what the study's rows leave on the table at the profile's budget.")
