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
# # 01 The data
#
# The study trains one BERT encoder on three tasks at once: five-class sentiment on the
# Stanford Sentiment Treebank (SST), paraphrase detection on Quora question pairs (trained
# on the 42,149-pair Quora training subset, not the course's 141,506-pair file), and
# semantic similarity on the STS Benchmark (a score from 0 to 5). This notebook shows the
# training data as the chosen profile sees it, and what the study's two data steps, dropping
# the longest 2% of inputs and balancing classes with Easy Data Augmentation (EDA), and its
# task samplers do to it.

# %% tags=["parameters"]
profile = None            # smoke, cpu or paper; None: params.yaml's `profile`
seed = 1                  # the training seed whose data sample (and augmentation) is shown
experiment = "augmented"  # an experiment with the length filter and EDA augmentation on
params = "params.yaml"
figures_dir = "figures"

# %% tags=["hide-input"]
from IPython.display import Markdown

from mtlib.study.provenance import config_header

Markdown(config_header(params, experiment, profile, seed, computes=False))

# %%
# %matplotlib inline
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto without ipywidgets

from IPython.display import Markdown, display

from mtlib.study import analysis, data_figures
from mtlib.model.backbone import load_tokenizer
from mtlib.config import load_config
from mtlib.data.encode import encode_split
from mtlib.tasks import TASKS
from mtlib.data.prepare import prepare_counted

cfg = load_config(params, experiment, profile, seed)
frames = analysis.training_frames(cfg)
sizes = {task: len(frame) for task, frame in frames.items()}

# %% tags=["hide-input"]
Markdown(
    f"Profile **{cfg.profile}**: backbone `{cfg.backbone.name}`, inputs truncated at {cfg.backbone.max_length} "
    f"tokens, training seed {cfg.train.seed}. Training examples: SST {sizes['sst']:,}, Quora {sizes['para']:,}, "
    f"STS {sizes['sts']:,} (the profile keeps at most {dict(vars(cfg.data.train_size))} per task; "
    "None means all).")

# %% [markdown]
# ## Class distributions
#
# The report shows SST's five classes and Quora's two as bar charts; STS scores are a
# histogram.

# %%
classes = analysis.class_table(frames)
shares = {task: part.set_index("class")["share"] for task, part in classes.groupby("task")}

# %% tags=["hide-input"]
display(Markdown(
    f"SST's largest class is *{shares['sst'].idxmax()}* ({shares['sst'].max():.0%} of the sentences), its smallest "
    f"*{shares['sst'].idxmin()}* ({shares['sst'].min():.0%}). {shares['para']['duplicate']:.0%} of the Quora pairs "
    f"are duplicates. The mean STS score is {frames['sts']['similarity'].mean():.2f}."))
data_figures.plot_class_distributions({task: frame[TASKS[task].label_column] for task, frame in frames.items()},
                                      f"{figures_dir}/01_class_distributions.png")

# %% [markdown]
# ## Token lengths and the 2% length filter
#
# Lengths are counted in the backbone's tokens, as the model sees them: a pair is one
# sequence (`[CLS] s1 [SEP] s2 [SEP]`) under sentence concatenation. The report drops the
# longest 2% of each task's training inputs.

# %%
tokenizer = load_tokenizer(cfg.backbone)
lengths = {task: encode_split(tokenizer, frame, task, cfg.model.pair_mode, cfg.backbone.max_length,
                              cfg.data.cache_dir, cfg.backbone.name).lengths()
           for task, frame in frames.items()}
length_summary = analysis.length_summary(lengths)
filtered = analysis.length_filter_counts(lengths, cfg.data.length_filter)
display(length_summary.round(1), filtered)

# %% tags=["hide-input"]
display(Markdown(
    f"98% of the inputs are at most {length_summary.loc['sst', 'p98']:.0f} tokens long for SST, "
    f"{length_summary.loc['para', 'p98']:.0f} for Quora and {length_summary.loc['sts', 'p98']:.0f} for STS. "
    f"The {cfg.data.length_filter:.0%} filter of experiment `{experiment}` drops {filtered['dropped'].sum():,} "
    f"training inputs in all ({', '.join(f'{t} {n}' for t, n in filtered['dropped'].items())})."))
data_figures.plot_token_lengths(lengths, f"{figures_dir}/01_token_lengths.png")

# %% [markdown]
# ## EDA class balancing
#
# Every under-represented class of SST and Quora is raised to the size of the largest with
# EDA (Wei and Zou 2019): synonym replacement, random insertion, random swap and random
# deletion, each touching about 10% of the words. The data below is what training uses
# (`mtlib.data.prepare.prepare_counted`, cached in `data/processed`).

# %%
data, counts = prepare_counted(cfg, tokenizer, splits=("train",))
balance = {task: analysis.augmentation_counts(data["train"][task].ids, data["train"][task].labels, task)
           for task in ("sst", "para")}
display(analysis.data_counts_table(counts), *balance.values())

# %% tags=["hide-input"]
display(Markdown(
    f"Balancing adds {balance['sst']['added'].sum():,} SST sentences (every class then has "
    f"{balance['sst']['after'].max():,}) and {balance['para']['added'].sum():,} Quora pairs "
    f"({balance['para']['after'].max():,} per class); both questions of a new pair are rewritten."))
data_figures.plot_augmentation_counts({task: b["before"].to_dict() for task, b in balance.items()},
                                      {task: b["after"].to_dict() for task, b in balance.items()},
                                      f"{figures_dir}/01_augmentation.png")

# %% [markdown]
# Each operation applied once to two training sentences:

# %%
analysis.eda_examples(frames["sst"]["sentence"].head(2).tolist(), seed)

# %% [markdown]
# ## Task samplers
#
# Which task the next batch comes from. The annealed schedule of Stickland and Murray (2019)
# draws task i with probability proportional to N_i^alpha, alpha = 1 - 0.8 (e - 1) / (E - 1):
# proportional to the dataset sizes in the first epoch, much flatter in the last.

# %%
probabilities = analysis.sampler_probabilities(sizes, cfg.train.epochs)
display(analysis.sampler_table(probabilities).round(3))
annealed = probabilities["annealed"]

# %% tags=["hide-input"]
display(Markdown(
    f"Over {cfg.train.epochs} epochs the annealed sampler moves Quora's share from "
    f"{annealed[1]['para']:.0%} to {annealed[cfg.train.epochs]['para']:.0%} and SST's from "
    f"{annealed[1]['sst']:.0%} to {annealed[cfg.train.epochs]['sst']:.0%}; the random sampler gives each task "
    f"{probabilities['random'][1]['sst']:.0%}."))
data_figures.plot_sampler_probabilities(probabilities, f"{figures_dir}/01_sampler_probabilities.png")
