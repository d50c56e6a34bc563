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
# # 08 The best model
#
# The study ends with a model worth using. Its configuration is chosen on the VALIDATION
# scores of the study's fine-tuned rows (never on dev): the row with the best validation mean,
# with, task by task, a head that validated clearly better in another row
# (mtlib/study/best_model.py says exactly how). It is then trained once more at
# `best_model.budget_factor` times the profile's budget (params.yaml), its checkpoint kept in
# `results/best_model/seed<k>/` beside the config it ran with (`results/best_model/config.yaml`,
# from which `mtlib train --config results/best_model/config.yaml --out DIR` retrains it
# without the study). Dev is scored once, with the weights validation selected; the course's
# SST and STS test files are predicted in its submission format.

# %% tags=["parameters"]
profile = None                           # smoke, cpu or paper; None: params.yaml's `profile`
params = "params.yaml"
runs_dir = "results/runs"                # the study's runs: the choice reads their validation scores
out_dir = "results/best_model"           # config.yaml, seed<k>/, predictions/, scores.json

# %% tags=["hide-input"]
from pathlib import Path

from IPython.display import Markdown

from mtlib.study.provenance import runs_header

Markdown(runs_header(sorted(Path(runs_dir).glob("*/seed*/metrics.json"))))

# %%
import warnings

import pandas as pd

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto without ipywidgets
from IPython.display import Markdown

from mtlib.config import read_params
from mtlib.io import write_json
from mtlib.record import RunRecord
from mtlib.study import best_model, report
from mtlib.training.loop import train

settings = best_model.read_settings(params)
experiments = read_params(params)["experiments"]
records = best_model.read_records(runs_dir)
configs = best_model.candidates(params, profile, records)  # rows fine-tuned from scratch on all three tasks
choice = best_model.choose(best_model.validation_frame(records), configs)
print("\n".join(choice.reasons))
choice.table.round(4)

# %%
cfg = best_model.best_config(params, profile, choice, settings)
out = Path(out_dir)
run_dir = out / f"seed{cfg.train.seed}"
best_model.write_config(out / "config.yaml", cfg)
t = cfg.train
print(f"{cfg.experiment}: {t.epochs} epochs x {t.batches_per_epoch} micro-batches ({settings.budget_factor}x the "
      f"profile's), lr {t.lr:g} ({t.schedule}, {t.warmup_steps} warm-up updates), validation every {t.eval_every} "
      f"micro-batches, {t.num_threads or 'default'} threads")
record = RunRecord.from_json(train(cfg, run_dir, overwrite=True, progress=False))

# %%
submissions = best_model.write_submission(run_dir, out / "predictions")
both = pd.concat([report.collect_runs(Path(runs_dir) / settings.baseline), report.collect_runs(out)],
                 ignore_index=True)  # the baseline's runs and the best model's, paired by seed
pair = {settings.baseline: {"parent": None}, best_model.EXPERIMENT: {"parent": settings.baseline}}
summary = report.summarise(both, pair, report.bootstrap_runs(both))
scores = best_model.comparison(record, records, experiments, settings.baseline, best_model.baseline_deltas(summary))
write_json(out / "scores.json", scores)

# %% tags=["hide-input"]
Markdown(
    f"Trained {record.updates} updates in {record.train_seconds:.0f} s; validation selected update "
    f"{record.best_update} (validation mean {record.validation['mean']:.3f}). Dev, scored once:\n\n"
    + best_model.readme_block(scores)
    + "\n\nTest predictions in the course's format: " + ", ".join(f"`{p.name}`" for p in submissions)
    + f" (in `{out / 'predictions'}`).")
