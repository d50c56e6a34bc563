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
# # 02 Individual head pretraining
#
# The report's AdvancedModel first trains each task's head alone with the encoder frozen
# (learning rate 1e-3, up to 25 epochs, patience 3 on the task's validation metric) and keeps each
# head's best epoch; multitask fine-tuning then starts from those heads. Because the encoder
# is frozen, its output for a split never changes: it is computed once, cached on disk, and
# every epoch after the first costs only the head.

# %% tags=["parameters"]
profile = None                 # smoke, cpu or paper; None: params.yaml's `profile`
experiment = "advanced_model"  # the experiment whose heads and data are pretrained
seed = 1
params = "params.yaml"
history_path = "results/pretrain/history.csv"
figure_path = "results/pretrain/history.png"

# %% tags=["hide-input"]
from IPython.display import Markdown

from mtlib.training.provenance import config_header

Markdown(config_header(params, experiment, profile, seed))

# %%
# %matplotlib inline
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto without ipywidgets
import torch
from IPython.display import Markdown, display

from mtlib.study import analysis, plotting
from mtlib.model.backbone import load_tokenizer
from mtlib.config import load_config
from mtlib.io import write_csv
from mtlib.model.multitask import build_model
from mtlib.seeds import seed_everything
from mtlib.training.pretrain import pretrain_heads
from mtlib.training.precision import resolve_amp, resolve_device
from mtlib.data.prepare import prepare_data

cfg = load_config(params, experiment, profile, seed)
t = cfg.train
torch.set_num_threads(t.num_threads or torch.get_num_threads())
device = resolve_device(t.device)
seed_everything(t.seed)
tokenizer = load_tokenizer(cfg.backbone)
data = prepare_data(cfg, tokenizer)
model = build_model(cfg).to(device)

# %% tags=["hide-input"]
Markdown(
    f"Experiment `{experiment}` on profile **{cfg.profile}** (backbone `{cfg.backbone.name}`): heads "
    f"{dict((task, cfg.model.head_for(task).kind) for task in t.tasks)}, pretraining knobs {t.pretrain_args}, "
    f"training examples {dict((task, len(split)) for task, split in data['train'].items())}.")

# %%
history = pretrain_heads(model, {task: data["train"][task] for task in t.tasks},
                         {task: data["validation"][task] for task in t.tasks}, seed=t.seed,
                         batch_size={task: t.batch_size[task] for task in t.tasks}, device=device,
                         amp=resolve_amp(t.amp, device), pad_id=tokenizer.pad_token_id,
                         eval_batch_size=t.eval_batch_size, bucketing=cfg.data.bucketing,
                         cache_dir=Path(cfg.data.cache_dir) / "features", selection=t.pretrain_heads,
                         **t.pretrain_args)
frame = analysis.pretrain_frame(history)
write_csv(history_path, frame)
best = analysis.best_pretrain_epochs(frame)
best

# %% tags=["hide-input"]
display(Markdown(
    "Best validation scores of the pretrained heads: " + "; ".join(
        f"{task} {row.metric} {row.best_score:.3f} at epoch {row.best_epoch} of {row.epochs_run}"
        for task, row in best.iterrows()) + ". "
    f"Encoding (or loading) the frozen features took {frame['seconds'].max():.1f} s, before the first epoch; "
    "every epoch after that costs only the heads."))
plotting.plot_learning_curves(frame.rename(columns={"task": "experiment"}).assign(seed=seed),
                              figure_path, metric="score", x="epoch",
                              labels={task: row.metric for task, row in best.iterrows()},
                              title="Individual head pretraining: validation metric per epoch (encoder frozen)")
