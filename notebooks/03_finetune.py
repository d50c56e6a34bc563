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
# # 03 Fine-tuning one experiment
#
# One row of the study: an experiment of params.yaml (its overrides of the profile), trained
# once per seed. `dvc repro` runs this notebook once per experiment of params.yaml marked
# `run: true`, for every seed of `pipeline.seeds`, the seeds side by side in processes of
# their own. Every run follows the report's protocol: heads first trained on the frozen
# encoder, then everything fine-tuned; the validation split held out of the training data
# picks the checkpoint, and dev is scored once, with it. Each run folder
# `results/runs/<experiment>/seed<k>/` keeps the resolved config (with the precision chosen
# on the machine that ran it), the validation history, metrics.json and the predictions.

# %% tags=["parameters"]
profile = None               # smoke, cpu or paper; None: params.yaml's `profile`
experiment = "base_model"    # a name under `experiments:` in params.yaml
seeds = None                 # None: params.yaml's pipeline.seeds; or one seed (3) or several ("1,2")
workers = 0                  # runs at once; 0: one per free core on a CPU, one on a GPU
params = "params.yaml"
runs_dir = "results/runs"
metrics_dir = "results/metrics"
curves_dir = "results/curves"

# %% tags=["hide-input"]
from IPython.display import Markdown

from mtlib.training.provenance import config_header

Markdown(config_header(params, experiment, profile, seeds))

# %%
# %matplotlib inline
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto without ipywidgets

import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from mtlib.config import load_config, resolve_seeds
from mtlib.training.runs import export_runs, run_history, run_summary, seeds_table
from mtlib.training.sweep import Job, train_many

seeds = resolve_seeds(seeds, params)
jobs = [Job(load_config(params, experiment, profile, seed), Path(runs_dir) / experiment / f"seed{seed}",
            overwrite=True) for seed in seeds]
cfg = jobs[0].cfg
m, t, d = cfg.model, cfg.train, cfg.data

# %% tags=["hide-input"]
Markdown(
    f"Experiment **{experiment}**, seeds {', '.join(map(str, seeds))}, profile **{cfg.profile}** "
    f"(backbone `{cfg.backbone.name}`): "
    f"{m.pair_mode} concatenation, heads {dict((task, m.head_for(task).kind) for task in t.tasks)}, "
    f"PALs {m.pals}; sampler {t.sampler}, update {t.update}, combiner {t.combiner}, SMART {t.smart}, "
    f"head pretraining {t.pretrain_heads}; length filter {d.length_filter:.0%}, EDA balancing {d.augment}; "
    f"{t.epochs} epochs of {t.batches_per_epoch} micro-batches at learning rate {t.lr:g}.")

# %%
metrics = train_many(jobs, workers)
export_runs({seed: job.out_dir for seed, job in zip(seeds, jobs)},
            f"{metrics_dir}/{experiment}.json", f"{curves_dir}/{experiment}.csv")
summaries = [run_summary(run) for run in metrics]
seeds_table(metrics).round(4)

# %% tags=["hide-input"]
Markdown(
    f"Dev score ({summaries[0]['curve_metric']}), scored once with the weights the validation split selected: "
    + "; ".join(f"seed {seed} {s['dev_score']:.3f} (selected at update {s['best_update']} of {s['updates']})"
                for seed, s in zip(seeds, summaries))
    + f" (mean {sum(s['dev_score'] for s in summaries) / len(summaries):.3f}). "
    f"{summaries[0]['params_trainable']:,} trainable parameters of {summaries[0]['params_total']:,}; "
    f"{sum(s['train_seconds'] for s in summaries):.0f} s of training in all "
    f"({sum(s['examples_per_second'] for s in summaries) / len(summaries):.1f} examples/s per run).")

# %% [markdown]
# ## Learning curves

# %% tags=["hide-input"]
history = pd.concat([run_history(job.out_dir) for job in jobs], ignore_index=True)
metric = summaries[0]["curve_metric"]
if len(history):
    ax = sns.lineplot(data=history.assign(seed=history["seed"].astype(str)), x="examples", y=metric,
                      hue="seed", marker="o")
    ax.set(title=f"{experiment}: validation {metric} during training, one line per seed",
           xlabel="training examples seen", ylabel=f"validation {metric}")
else:
    display(Markdown("This experiment does not fine-tune (the random predictor, the heads alone): "
                     "it has no learning curve."))
