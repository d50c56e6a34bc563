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
# # 02 Heads on the frozen encoder
#
# Every run of the study starts as the report's did ("For all of our experiments we first
# pretrained our classification head", §4): the encoder frozen, only the heads train
# (learning rate 1e-3, up to 25 epochs, patience 3 on the validation split held out of the
# training data). This notebook looks at that first phase on its own:
#
# * **which sentence vector and which pair head** the frozen encoder serves best: the
#   [CLS] state or the mean of the tokens, a pair as one sequence or as two passes, and a
#   linear head or a scaled cosine for the pairs. The profile's pooling is chosen here, on
#   validation;
# * **joint or individual pretraining**: the same heads, kept at one epoch chosen by the
#   mean, or each at its own best epoch (the report's AdvancedModel);
# * **SMART under mixed precision**: how large its adversarial term is when computed in
#   bf16 (as the report's runs did) and in fp32, where a perturbation of 1e-5 is representable.
#
# The encoder's output is computed once per split and cached: every epoch after the first
# costs only the heads.

# %% tags=["parameters"]
profile = None                 # smoke, cpu or paper; None: params.yaml's `profile`
experiment = "base_model"      # the setting the comparisons start from
seed = 1
comparison_examples = 3000     # training examples per task for the pooling / pair-head comparison
smart_batches = 6              # training batches per task for SMART's term sizes
params = "params.yaml"
comparison_path = "results/pretrain/comparison.csv"
history_path = "results/pretrain/history.csv"
figure_path = "results/pretrain/history.png"

# %% tags=["hide-input"]
from IPython.display import Markdown

from mtlib.study.provenance import config_header

Markdown(config_header(params, experiment, profile, seed))

# %%
# %matplotlib inline
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto without ipywidgets
import pandas as pd
import torch
from IPython.display import Markdown, display

from mtlib.config import load_config, with_overrides
from mtlib.data.encode import BatchStream
from mtlib.data.prepare import prepare_data
from mtlib.io import write_csv
from mtlib.model.backbone import load_tokenizer
from mtlib.model.multitask import build_model
from mtlib.seeds import seed_everything
from mtlib.study import analysis, plotting
from mtlib.training.frozen import compare
from mtlib.training.precision import resolve_amp, resolve_device
from mtlib.training.pretrain import HeadPretraining, pretrain_heads
from mtlib.training.smart import adversarial_term_sizes

cfg = load_config(params, experiment, profile, seed)
t = cfg.train
device = resolve_device(t.device)
amp = resolve_amp(t.amp, device)

# %% [markdown]
# ## Which sentence vector, and which head for a pair
#
# Head-only validation scores, each head pretrained on a fixed sample of the training data
# for the profile's full number of epochs (no early stopping) and kept at its own best
# validation epoch: a head that learns slowly, as a linear STS regressor on mean-pooled
# vectors does, is neither stopped by the others nor by a few flat epochs. *One sequence* encodes a pair as `[CLS] s1 [SEP] s2 [SEP]` (the report's
# sentence concatenation); *two passes* encode each sentence alone and concatenate the two
# vectors (embedding concatenation), read by a linear head or by the scaled cosine of the
# two vectors. SST is a single sentence: only the pooling changes it.

# %%
PAIR_COSINE = "model.head_overrides={para: {kind: cosine}, sts: {kind: cosine}}"
variants = {}
for pooling, name in (("cls", "[CLS]"), ("mean", "mean")):
    variants[f"{name}, one sequence, linear"] = [f"model.pooling={pooling}", "model.pair_mode=sentence"]
    variants[f"{name}, two passes, linear"] = [f"model.pooling={pooling}", "model.pair_mode=embedding"]
    variants[f"{name}, two passes, cosine"] = [f"model.pooling={pooling}", "model.pair_mode=embedding", PAIR_COSINE]
base = with_overrides(cfg, [f"train.pretrain_args.max_examples={comparison_examples}", "model.head_overrides={}",
                           "train.pretrain_heads=individual", "train.pretrain_args.patience=null"])
comparison = compare(base, variants)
write_csv(comparison_path, comparison.reset_index())
comparison.round(3)

# %% tags=["hide-input"]
best = comparison["mean"].idxmax()
pooled = comparison.assign(pooling=[v.split(",")[0] for v in comparison.index]).groupby("pooling")["mean"].mean()
Markdown(
    f"On validation the best way to read the frozen `{cfg.backbone.name}` is **{best}** (mean "
    f"{comparison.loc[best, 'mean']:.3f}); averaged over the pair encodings, [CLS] pooling scores "
    f"{pooled.get('[CLS]', float('nan')):.3f} and mean pooling {pooled.get('mean', float('nan')):.3f}. "
    f"This profile pools with **{cfg.model.pooling}**. A linear head on two concatenated vectors scores STS at "
    f"r = {comparison.filter(like='two passes, linear', axis=0)['sts/pearson'].max():.3f} at best, the cosine of the "
    f"same vectors at r = {comparison.filter(like='cosine', axis=0)['sts/pearson'].max():.3f}: how a pair head reads "
    "two sentence vectors matters as much as whether they are encoded together.")

# %% [markdown]
# ## Joint or individual pretraining
#
# The same heads on the study's features, trained epoch by epoch: *joint* keeps every head at
# the one epoch with the best mean validation metric, *individual* keeps each at its own best.
# Heads share nothing and the encoder is frozen, so the trajectories are the same; only the
# kept epochs differ.

# %%
seed_everything(t.seed)
tokenizer = load_tokenizer(cfg.backbone)
data = prepare_data(cfg, tokenizer, splits=("train", "validation"))
histories = {}
for selection in ("joint", "individual"):
    model = build_model(cfg).to(device)
    how = HeadPretraining.for_run(cfg, device, amp, tokenizer.pad_token_id, selection)
    histories[selection] = pretrain_heads(model, {task: data["train"][task] for task in t.tasks},
                                          data["validation"], how)
frame = pd.concat({selection: analysis.pretrain_frame(history) for selection, history in histories.items()},
                  names=["selection"]).reset_index(level=0)
write_csv(history_path, frame)
kept = frame[frame["kept"]].pivot_table(index="task", columns="selection", values=["epoch", "score"])
kept.round(3)

# %% tags=["hide-input"]
scores = kept["score"]
display(Markdown(
    f"Joint selection keeps every head at epoch {int(kept['epoch']['joint'].iloc[0])} (validation mean "
    f"{scores['joint'].mean():.3f}); individual selection keeps "
    + ", ".join(f"{task} at epoch {int(e)}" for task, e in kept["epoch"]["individual"].items())
    + f" (mean {scores['individual'].mean():.3f}). Individual selection can only match or beat joint "
    "selection on validation, by construction; the fine-tuning rows measure what the difference is worth after "
    "fine-tuning."))
plotting.plot_learning_curves(frame[frame["selection"] == "individual"].rename(columns={"task": "experiment"})
                              .assign(seed=seed), figure_path, metric="score", x="epoch",
                              labels={task: metric for task, metric in zip(frame["task"], frame["metric"])},
                              title="Heads on the frozen encoder: validation metric per epoch",
                              run=f"profile {cfg.profile} · seed {seed} · experiment {experiment} (its heads only)")

# %% [markdown]
# ## SMART's adversarial term under mixed precision
#
# SMART perturbs the input embeddings by at most 1e-5. bf16 keeps 8 bits of mantissa: after
# the first LayerNorm, a change of 1e-5 to a value of size 1 is lost in the next bf16
# matrix product, so computed in bf16 the adversarial term measures rounding (and dropout),
# not the perturbation. The study computes it in fp32 (`smart_args.precision: fp32`).
# Below: the mean term over training batches of each task, dropout off, then on.

# %%
streams = {task: BatchStream(data["train"][task], t.batch_size[task], t.seed, tokenizer.pad_token_id)
           for task in t.tasks}
batches = [streams[task].next().to(device) for task in t.tasks for _ in range(smart_batches)]
model = build_model(cfg).to(device)
sizes = adversarial_term_sizes(model, batches, device.type)  # under bf16 autocast, whatever this run's precision
pd.Series(sizes, name="mean adversarial term").to_frame()

# %% tags=["hide-input"]
Markdown(
    f"Computed under bf16 autocast the term is {sizes['amp']:.2e}; computed in fp32 it is {sizes['fp32']:.2e}, "
    f"and {sizes['fp32 with dropout']:.2e} with dropout on: at epsilon = 1e-5 it is dropout, not the "
    "perturbation, that dominates SMART's smoothness term (this run's own precision is "
    f"{'bf16' if amp == 'bf16' else 'fp32'}).")
