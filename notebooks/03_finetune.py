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

from mtlib.study.provenance import config_header

Markdown(config_header(params, experiment, profile, seeds))

# %%
# %matplotlib inline
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto without ipywidgets

from IPython.display import Markdown, display

from mtlib.study.finetuning import (describe_setup, plot_validation_curves, run_summary, seed_jobs, seeds_table,
                                    train_seeds)

jobs = seed_jobs(params, experiment, profile, seeds, runs_dir)
seeds = [job.cfg.train.seed for job in jobs]

# %% tags=["hide-input"]
Markdown(describe_setup(jobs[0].cfg, seeds))

# %%
records = train_seeds(jobs, workers, metrics_dir, curves_dir)
summaries = [run_summary(record) for record in records]
seeds_table(records).round(4)

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
#
# The score that counts on the VALIDATION split (the one that picks the checkpoint) at every
# evaluation; dev is scored once per run, with the selected weights.

# %% tags=["hide-input"]
if plot_validation_curves(jobs, summaries[0]["curve_metric"]) is None:
    display(Markdown("This experiment does not fine-tune (the random predictor, the heads alone): "
                     "it has no learning curve."))
