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
# # 04 Projected attention layers added after fine-tuning
#
# Projected attention layers (PALs, Stickland and Murray 2019) give each task a small
# attention of its own inside every BERT layer: PAL_t(h) = V_D g(V_E h) of the layer's input
# h, where V_E projects the hidden state down to a d-dimensional space shared by all layers
# of task t, g is a multi-head attention in that space, and V_D projects back up. The PAL's
# output is added beside the feed-forward block, at the layer's OUTPUT LayerNorm (as the
# authors' reference code does; mtlib.model.pal, `placement: output`, the study's setting):
# the layer computes LN(FFN(a) + a + PAL_t(h)) with a = LN(h + SA(h)), not the paper's
# shorthand LN(h + SA(h) + PAL_t(h)) at the attention sub-layer.
#
# The report's best model adds PALs to the *fine-tuned* AdvancedModel and trains only the
# PALs, everything else frozen. Each PAL starts with **no influence**: V_D = 0, so the model
# computes exactly what the AdvancedModel computed, while V_E, the queries, keys and values
# are random so that the gradient of V_D is not zero. (The report set both V_E and V_D to
# zero; then g(V_E h) = 0 and every PAL gradient is zero forever.) The starting point is no
# candidate for the best checkpoint: the weights kept always include trained PALs.
#
# `pal_after_adjusted` trains nothing: it scores PAL-after's weights again through the SST
# adjustment matrix fitted on them.
#
# `continued` and `continued_heads` are PAL-after's compute-matched controls: the
# AdvancedModel's weights trained on, without PALs, for the same micro-batches PAL-after
# trains, at the AdvancedModel's own learning rate, sampler and heads; `continued` trains
# every weight, `continued_heads` only the heads. A continuation's curve is drawn on its
# starting run's axis: its examples count on from those the start had seen at its selected
# checkpoint.

# %% tags=["parameters"]
profile = None              # smoke, cpu or paper; None: params.yaml's `profile`
experiment = "pal_after"    # an experiment whose train.init_from names another one's runs
seeds = None                # None: params.yaml's pipeline.seeds; or one seed (3) or several ("1,2")
workers = 0                 # runs at once; 0: one per free core on a CPU, one on a GPU
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
from pathlib import Path

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto without ipywidgets

from IPython.display import Markdown, display

from mtlib.record import RunRecord
from mtlib.study.finetuning import (describe_setup, plot_validation_curves, run_summary, seed_jobs, seeds_table,
                                    train_seeds)

jobs = seed_jobs(params, experiment, profile, seeds, runs_dir)
seeds = [job.cfg.train.seed for job in jobs]
m, t = jobs[0].cfg.model, jobs[0].cfg.train

# %% tags=["hide-input"]
Markdown(describe_setup(jobs[0].cfg, seeds))

# %%
init_dirs = {seed: Path(job.cfg.train.init_from.format(seed=seed)) for seed, job in zip(seeds, jobs)}
starts = {seed: run_summary(RunRecord.read(folder / "metrics.json")) for seed, folder in init_dirs.items()}

# %% tags=["hide-input"]
Markdown(
    "Starting points: " + "; ".join(f"`{folder.as_posix()}` (dev mean {starts[seed]['dev_score']:.3f})"
                                    for seed, folder in init_dirs.items())
    + (f". PAL dimension d = {m.pal_args['num_heads']} heads x {m.pal_args['head_dim']} = "
       f"{m.pal_args['num_heads'] * m.pal_args['head_dim']}" if m.pals != "none" else ". No PALs")
    + f"; trains {'the heads alone' if jobs[0].cfg.methods.frozen_encoder else 'the PALs alone' if m.pals == 'after' else 'every weight'}"
    + f"; SST adjustment matrix: {t.sst_adjustment}.")

# %%
records = train_seeds(jobs, workers, metrics_dir, curves_dir)
summaries = [run_summary(record) for record in records]
seeds_table(records).round(4)

# %% tags=["hide-input"]
Markdown(
    "Dev mean of the starting run and of this one: " + "; ".join(
        f"seed {seed} {starts[seed]['dev_score']:.3f} -> {s['dev_score']:.3f} "
        f"({s['dev_score'] - starts[seed]['dev_score']:+.3f}), best evaluation at update {s['best_update']} "
        f"of {s['updates']}" for seed, s in zip(seeds, summaries))
    + f". {summaries[0]['params_trainable']:,} of {summaries[0]['params_total']:,} parameters "
    f"({summaries[0]['params_trainable'] / summaries[0]['params_total']:.2%}) are trainable; "
    f"{sum(s['train_seconds'] for s in summaries):.0f} s of training in all.")

# %% [markdown]
# ## Learning curves
#
# The score that counts on the VALIDATION split (the one that picks the checkpoint) at every
# evaluation; dev is scored once per run, with the selected weights.

# %% tags=["hide-input"]
if plot_validation_curves(jobs, summaries[0]["curve_metric"]) is None:
    display(Markdown("This experiment does not train: it has no learning curve."))
