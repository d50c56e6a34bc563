"""Write the study's source notebooks (notebooks/NN_*.ipynb) from the cells below.

The notebooks are thin: a ``parameters`` cell of primitives that papermill overrides
(dvc.yaml passes profile, experiment and seed), calls into mtlib, figures through
mtlib.study.figures, and Markdown whose numbers come from the results (f-strings displayed with
IPython's Markdown), never typed in. They are committed without outputs.

    python scripts/make_notebooks.py          # (re)write notebooks/*.ipynb
    python scripts/make_notebooks.py --check  # exit 1 if a notebook differs from this file
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def md(text: str) -> tuple[str, str, list]:
    return "markdown", text.strip("\n"), []


def code(text: str, *tags: str) -> tuple[str, str, list]:
    return "code", text.strip("\n"), list(tags)


NOTEBOOKS: dict[str, list] = {}

NOTEBOOKS["01_data"] = [
    md("""
# 01 The data

The study trains one BERT encoder on three tasks at once: five-class sentiment on the
Stanford Sentiment Treebank (SST), paraphrase detection on Quora question pairs, and
semantic similarity on the STS Benchmark (a score from 0 to 5). This notebook shows the
training data as the chosen profile sees it, and what the study's two data steps, dropping
the longest 2% of inputs and balancing classes with Easy Data Augmentation (EDA), and its
task samplers do to it.
"""),
    code("""
profile = None            # smoke, cpu or paper; None: params.yaml's `profile`
seed = 1                  # the training seed whose data sample (and augmentation) is shown
experiment = "augmented"  # an experiment with the length filter and EDA augmentation on
params = "params.yaml"
figures_dir = "figures"
""", "parameters"),
    code("""
%matplotlib inline
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto without ipywidgets

from IPython.display import Markdown, display

from mtlib.study import analysis, figures
from mtlib.model.backbone import load_tokenizer
from mtlib.config import load_config
from mtlib.data.encode import encode_split
from mtlib.tasks import TASKS
from mtlib.data.prepare import prepare_data

cfg = load_config(params, experiment, profile, seed)
frames = analysis.training_frames(cfg)
sizes = {task: len(frame) for task, frame in frames.items()}
display(Markdown(
    f"Profile **{cfg.profile}**: backbone `{cfg.backbone.name}`, inputs truncated at {cfg.backbone.max_length} "
    f"tokens, training seed {cfg.train.seed}. Training examples: SST {sizes['sst']:,}, Quora {sizes['para']:,}, "
    f"STS {sizes['sts']:,} (the profile keeps at most {dict(vars(cfg.data.train_size))} per task; "
    "None means all)."))
"""),
    md("""
## Class distributions

The report shows SST's five classes and Quora's two as bar charts; STS scores are a
histogram.
"""),
    code("""
classes = analysis.class_table(frames)
shares = {task: part.set_index("class")["share"] for task, part in classes.groupby("task")}
display(Markdown(
    f"SST's largest class is *{shares['sst'].idxmax()}* ({shares['sst'].max():.0%} of the sentences), its smallest "
    f"*{shares['sst'].idxmin()}* ({shares['sst'].min():.0%}). {shares['para']['duplicate']:.0%} of the Quora pairs "
    f"are duplicates. The mean STS score is {frames['sts']['similarity'].mean():.2f}."))
figures.plot_class_distributions({task: frame[TASKS[task].label_column] for task, frame in frames.items()},
                                 f"{figures_dir}/01_class_distributions.png")
"""),
    md("""
## Token lengths and the 2% length filter

Lengths are counted in the backbone's tokens, as the model sees them: a pair is one
sequence (`[CLS] s1 [SEP] s2 [SEP]`) under sentence concatenation. The report drops the
longest 2% of each task's training inputs.
"""),
    code("""
tokenizer = load_tokenizer(cfg.backbone)
lengths = {task: encode_split(tokenizer, frame, task, cfg.model.pair_mode, cfg.backbone.max_length,
                              cfg.data.cache_dir, cfg.backbone.name).lengths()
           for task, frame in frames.items()}
length_summary = analysis.length_summary(lengths)
filtered = analysis.length_filter_counts(lengths, cfg.data.length_filter)
display(length_summary.round(1), filtered)
display(Markdown(
    f"98% of the inputs are at most {length_summary.loc['sst', 'p98']:.0f} tokens long for SST, "
    f"{length_summary.loc['para', 'p98']:.0f} for Quora and {length_summary.loc['sts', 'p98']:.0f} for STS. "
    f"The {cfg.data.length_filter:.0%} filter of experiment `{experiment}` drops {filtered['dropped'].sum():,} "
    f"training inputs in all ({', '.join(f'{t} {n}' for t, n in filtered['dropped'].items())})."))
figures.plot_token_lengths(lengths, f"{figures_dir}/01_token_lengths.png")
"""),
    md("""
## EDA class balancing

Every under-represented class of SST and Quora is raised to the size of the largest with
EDA (Wei and Zou 2019): synonym replacement, random insertion, random swap and random
deletion, each touching about 10% of the words. The data below is what training uses
(`mtlib.training.loop.prepare_data`, cached in `data/processed`).
"""),
    code("""
counts = {}
data = prepare_data(cfg, tokenizer, splits=("train",), counts=counts)
balance = {task: analysis.augmentation_counts(data["train"][task].ids, data["train"][task].labels, task)
           for task in ("sst", "para")}
display(analysis.data_counts_table(counts), *balance.values())
display(Markdown(
    f"Balancing adds {balance['sst']['added'].sum():,} SST sentences (every class then has "
    f"{balance['sst']['after'].max():,}) and {balance['para']['added'].sum():,} Quora pairs "
    f"({balance['para']['after'].max():,} per class); both questions of a new pair are rewritten."))
figures.plot_augmentation_counts({task: b["before"].to_dict() for task, b in balance.items()},
                                 {task: b["after"].to_dict() for task, b in balance.items()},
                                 f"{figures_dir}/01_augmentation.png")
"""),
    md("Each operation applied once to two training sentences:"),
    code("""
analysis.eda_examples(frames["sst"]["sentence"].head(2).tolist(), seed)
"""),
    md("""
## Task samplers

Which task the next batch comes from. The annealed schedule of Stickland and Murray (2019)
draws task i with probability proportional to N_i^alpha, alpha = 1 - 0.8 (e - 1) / (E - 1):
proportional to the dataset sizes in the first epoch, much flatter in the last.
"""),
    code("""
probabilities = analysis.sampler_probabilities(sizes, cfg.train.epochs)
display(analysis.sampler_table(probabilities).round(3))
annealed = probabilities["annealed"]
display(Markdown(
    f"Over {cfg.train.epochs} epochs the annealed sampler moves Quora's share from "
    f"{annealed[1]['para']:.0%} to {annealed[cfg.train.epochs]['para']:.0%} and SST's from "
    f"{annealed[1]['sst']:.0%} to {annealed[cfg.train.epochs]['sst']:.0%}; the random sampler gives each task "
    f"{probabilities['random'][1]['sst']:.0%}."))
figures.plot_sampler_probabilities(probabilities, f"{figures_dir}/01_sampler_probabilities.png")
"""),
]

NOTEBOOKS["02_pretraining"] = [
    md("""
# 02 Individual head pretraining

The report's AdvancedModel first trains each task's head alone with the encoder frozen
(learning rate 1e-3, up to 25 epochs, patience 3 on the task's dev metric) and keeps each
head's best epoch; multitask fine-tuning then starts from those heads. Because the encoder
is frozen, its output for a split never changes: it is computed once, cached on disk, and
every epoch after the first costs only the head.
"""),
    code("""
profile = None                 # smoke, cpu or paper; None: params.yaml's `profile`
experiment = "advanced_model"  # the experiment whose heads and data are pretrained
seed = 1
params = "params.yaml"
figures_dir = "figures"
history_path = "results/pretrain/history.csv"
""", "parameters"),
    code("""
%matplotlib inline
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto without ipywidgets
import torch
from IPython.display import Markdown, display

from mtlib.study import analysis, figures
from mtlib.model.backbone import load_tokenizer
from mtlib.config import load_config
from mtlib.io import write_csv
from mtlib.model.multitask import build_model
from mtlib.training.pretrain import pretrain_heads
from mtlib.data.prepare import prepare_data, resolve_device, seed_everything

cfg = load_config(params, experiment, profile, seed)
t = cfg.train
torch.set_num_threads(t.num_threads or torch.get_num_threads())
device = resolve_device(t.device)
seed_everything(t.seed)
tokenizer = load_tokenizer(cfg.backbone)
data = prepare_data(cfg, tokenizer)
model = build_model(cfg).to(device)
display(Markdown(
    f"Experiment `{experiment}` on profile **{cfg.profile}** (backbone `{cfg.backbone.name}`): heads "
    f"{dict((task, cfg.model.head_for(task).kind) for task in t.tasks)}, pretraining knobs {t.pretrain_args}, "
    f"training examples {dict((task, len(split)) for task, split in data['train'].items())}."))
"""),
    code("""
history = pretrain_heads(model, {task: data["train"][task] for task in t.tasks},
                         {task: data["dev"][task] for task in t.tasks}, seed=t.seed,
                         batch_size={task: t.batch_size[task] for task in t.tasks}, device=device, amp=t.amp,
                         pad_id=tokenizer.pad_token_id, eval_batch_size=t.eval_batch_size,
                         bucketing=cfg.data.bucketing, cache_dir=Path(cfg.data.cache_dir) / "features",
                         **t.pretrain_args)
frame = analysis.pretrain_frame(history)
write_csv(history_path, frame)
best = analysis.best_pretrain_epochs(frame)
best
"""),
    code("""
first = frame.groupby("task")["seconds"].first()
rest = frame[frame["epoch"] > 1].groupby("task")["seconds"].median()
display(Markdown(
    "Best dev scores of the pretrained heads: " + "; ".join(
        f"{task} {row.metric} {row.best_score:.3f} at epoch {row.best_epoch} of {row.epochs_run}"
        for task, row in best.iterrows()) + ". "
    f"The first epoch, which encodes (or loads) the frozen features, took "
    f"{', '.join(f'{task} {s:.1f} s' for task, s in first.items())}; later epochs a median of "
    f"{', '.join(f'{task} {s:.2f} s' for task, s in rest.items())}."))
figures.plot_learning_curves(frame.rename(columns={"task": "experiment"}).assign(seed=seed),
                             f"{figures_dir}/02_pretraining.png", metric="score", x="epoch",
                             labels={task: row.metric for task, row in best.iterrows()},
                             title="Individual head pretraining: dev metric per epoch (encoder frozen)")
"""),
]

_FINETUNE_SETUP = """
%matplotlib inline
import json
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto without ipywidgets

from IPython.display import Markdown, display

from mtlib.study import analysis, figures
from mtlib.config import load_config
from mtlib.training.runs import export_run
from mtlib.training.loop import train

cfg = load_config(params, experiment, profile, seed)
run_dir = f"{runs_dir}/{experiment}/seed{seed}"
m, t, d = cfg.model, cfg.train, cfg.data
display(Markdown(
    f"Experiment **{experiment}**, seed {seed}, profile **{cfg.profile}** (backbone `{cfg.backbone.name}`): "
    f"{m.pair_mode} concatenation, heads {dict((task, m.head_for(task).kind) for task in t.tasks)}, "
    f"PALs {m.pals}; sampler {t.sampler}, update {t.update}, combiner {t.combiner}, SMART {t.smart}, "
    f"head pretraining {t.pretrain_heads}; length filter {d.length_filter:.0%}, EDA balancing {d.augment}; "
    f"{t.epochs} epochs of {t.batches_per_epoch} micro-batches at learning rate {t.lr:g}."))
"""

_FINETUNE_RUN = """
metrics = train(cfg, run_dir, overwrite=True, progress=False)
export_run(run_dir, f"{metrics_dir}/{experiment}/seed{seed}.json", f"{curves_dir}/{experiment}/seed{seed}.csv")
summary = analysis.run_summary(metrics)
display(analysis.metrics_table(metrics).round(4))
"""

_FINETUNE_CURVE = """
history = analysis.run_history(run_dir)
(figures.plot_learning_curves(history, f"{run_dir}/learning_curve.png", metric=summary["curve_metric"],
                              title=f"{experiment}, seed {seed}: dev {summary['curve_metric']} during training")
 if len(history) else Markdown("The random predictor does not train: it has no learning curve."))
"""

NOTEBOOKS["03_finetune"] = [
    md("""
# 03 Fine-tuning one experiment

One row of the study: an experiment of params.yaml (its overrides of the profile), one
seed. `dvc repro` runs this notebook once per experiment and seed listed under
`pipeline:` in params.yaml; the run folder `results/runs/<experiment>/seed<k>/` keeps the
resolved config, the dev history, metrics.json and the predictions.
"""),
    code("""
profile = None               # smoke, cpu or paper; None: params.yaml's `profile`
experiment = "base_model"    # a name under `experiments:` in params.yaml
seed = 1
params = "params.yaml"
runs_dir = "results/runs"
metrics_dir = "results/metrics"
curves_dir = "results/curves"
""", "parameters"),
    code(_FINETUNE_SETUP),
    code(_FINETUNE_RUN),
    code("""
display(Markdown(
    f"Dev score {summary['dev_score']:.3f} ({summary['curve_metric']}) from the best evaluation, at update "
    f"{summary['best_update']} of {summary['updates']}; {summary['params_trainable']:,} trainable parameters of "
    f"{summary['params_total']:,}; {summary['train_seconds']:.0f} s of training "
    f"({summary['examples_per_second']:.1f} examples/s)."))
"""),
    md("## Learning curve"),
    code(_FINETUNE_CURVE),
]

NOTEBOOKS["04_pal_after"] = [
    md("""
# 04 Projected attention layers added after fine-tuning

Projected attention layers (PALs, Stickland and Murray 2019) give each task a small
attention of its own inside every BERT layer: layer l's attention sub-layer becomes
LN(h + SA(h) + PAL_t(h)) with PAL_t(h) = V_D g(V_E h), where V_E projects the hidden state
down to a d-dimensional space shared by all layers of task t, g is a multi-head attention
in that space, and V_D projects back up.

The report's best model adds PALs to the *fine-tuned* AdvancedModel and trains only the
PALs, everything else frozen. Each PAL starts with **no influence**: V_D = 0, so the model
computes exactly what the AdvancedModel computed, while V_E, the queries, keys and values
are random so that the gradient of V_D is not zero. (The report set both V_E and V_D to
zero; then g(V_E h) = 0 and every PAL gradient is zero forever.) The starting point is
scored first and competes for the best checkpoint, so the PALs have to earn their place.
"""),
    code("""
profile = None              # smoke, cpu or paper; None: params.yaml's `profile`
experiment = "pal_after"    # pal_after or pal_after_adjusted (+ the SST adjustment matrix)
seed = 1
params = "params.yaml"
runs_dir = "results/runs"
metrics_dir = "results/metrics"
curves_dir = "results/curves"
""", "parameters"),
    code(_FINETUNE_SETUP),
    code("""
init_dir = Path(t.init_from.format(seed=seed))
start = analysis.run_summary(json.loads((init_dir / "metrics.json").read_text()))
display(Markdown(
    f"Starting point: `{init_dir}` (dev mean {start['dev_score']:.3f}). PAL dimension d = "
    f"{m.pal_args['num_heads']} heads x {m.pal_args['head_dim']} = {m.pal_args['num_heads'] * m.pal_args['head_dim']}; "
    f"SST adjustment matrix: {t.sst_adjustment}."))
"""),
    code(_FINETUNE_RUN),
    code("""
display(Markdown(
    f"Dev mean {start['dev_score']:.3f} before the PALs, {summary['dev_score']:.3f} after "
    f"({summary['dev_score'] - start['dev_score']:+.3f}); the best evaluation was at update {summary['best_update']} "
    f"of {summary['updates']} (0: the PALs never beat the starting point). Only "
    f"{summary['params_trainable']:,} of {summary['params_total']:,} parameters "
    f"({summary['params_trainable'] / summary['params_total']:.2%}) were trained, in "
    f"{summary['train_seconds']:.0f} s."))
"""),
    md("## Learning curve (update 0 is the AdvancedModel)"),
    code(_FINETUNE_CURVE),
]

NOTEBOOKS["05_results"] = [
    md("""
# 05 Results

Every run under `results/runs/`, summarised per experiment over its seeds (mean ± std and
a 95% t-interval), beside the report's single-run number from its Table 2, with the paired
difference to the BaseModel over the seeds both share.
"""),
    code("""
params = "params.yaml"
runs_dir = "results/runs"
table_csv = "results/table.csv"
table_md = "results/table.md"
figures_dir = "figures"
baseline = "base_model"          # the paired differences are taken against this experiment
compromise = "hidden_compromise" # Gradient Compromise ...
annealed = "hidden"              # ... against the annealed sampler it builds on
""", "parameters"),
    code("""
%matplotlib inline
from pathlib import Path

from IPython.display import Markdown, display

from mtlib.study import analysis, figures
from mtlib.config import read_params
from mtlib.study.report import REPORT_TABLE2, collect_histories, collect_runs, summarise, write_table

pipeline = read_params(params)["pipeline"]
runs = collect_runs(runs_dir)
labels = {experiment: row["label"] for experiment, row in pipeline["rows"].items() if row["label"]}
summary = summarise(runs, labels, baseline=baseline)
write_table(summary, table_csv, table_md, baseline=baseline)
Markdown(Path(table_md).read_text())
"""),
    code("""
best = summary.loc[summary["mean_mean"].idxmax()]
report_best = max(REPORT_TABLE2, key=lambda label: REPORT_TABLE2[label][3])
rho, n_both = analysis.rank_agreement(summary)
beaten = summary.dropna(subset=["mean_report"])
display(Markdown(
    f"{len(runs)} runs of {summary['experiment'].nunique()} experiments. The best dev mean is "
    f"**{best['experiment']}** ({best['label'] or 'no report row'}): {best['mean_mean']:.3f} ± "
    f"{best['mean_std']:.3f} over {best['n_seeds']} seed(s); the report's best row is *{report_best}* "
    f"({REPORT_TABLE2[report_best][3]:.3f}). Over the {n_both} experiments with a report number, the Spearman "
    f"rank correlation between our means and the report's is {rho:.2f}; {int((beaten['mean_mean'] > beaten['mean_report']).sum())} "
    f"of them score above the report's number (see the caveat above the table on the backbone)."))
"""),
    md("## This study beside the report"),
    code("""
figures.plot_report_comparison(summary, f"{figures_dir}/05_report_comparison.png")
"""),
    md("""
## Score against task-specific parameters

Everything but the heads (and PALs) is shared; the x-axis counts what each task owns.
"""),
    code("""
figures.plot_score_vs_parameters(summary, f"{figures_dir}/05_score_vs_parameters.png")
"""),
    md("""
## Learning curves

Dev mean against training examples seen, mean ± std over seeds, one figure per family of
experiments, each drawn against the setting it builds on. The random predictor does not
train and single-task runs have no dev mean: they are in the table only.
"""),
    code("""
histories = collect_histories(runs_dir)
groups = analysis.curve_groups(pipeline["rows"], sorted(set(histories["experiment"])))
for group, names in groups.items():
    display(figures.plot_learning_curves(analysis.select_experiments(histories, names),
                                         f"{figures_dir}/05_learning_curves/{group}.png",
                                         title=f"Dev mean during training: {group}"))
"""),
    md("""
## Gradient Compromise against the annealed sampler

The report's Figure 5 claims Gradient Compromise learns much faster in the first epochs.
Examples seen is the fair x-axis: one Gradient Compromise update consumes a whole group of
batches.
"""),
    code("""
figures.plot_compromise_vs_annealed(histories, f"{figures_dir}/05_compromise_vs_annealed.png",
                                    compromise=compromise, annealed=annealed)
"""),
]

NOTEBOOKS["06_errors"] = [
    md("""
# 06 Error analysis

The predictions of one run on the dev set, joined with the text: the SST confusion
matrix, the worst errors of each task (as in the report's error-analysis table), and
errors by input length and by class.
"""),
    code("""
experiment = ""                  # empty: the experiment with the best dev mean over its seeds
exclude = "random_predictor"     # comma-separated experiments never chosen as "best"
seed = 1
runs_dir = "results/runs"
figures_dir = "figures"
n_worst = 5
""", "parameters"),
    code("""
%matplotlib inline
from IPython.display import Markdown, display

from mtlib.study import analysis, figures
from mtlib.study.report import collect_runs
from mtlib.tasks import TASKS

runs = collect_runs(runs_dir)
chosen = experiment or analysis.best_experiment(runs, exclude=exclude.split(","))
run_dir = f"{runs_dir}/{chosen}/seed{seed}"
frames = {task: analysis.read_predictions(run_dir, task) for task in TASKS}
mean = runs[runs["experiment"] == chosen]["mean"].mean()
display(Markdown(
    f"Run `{run_dir}`: " + ("the experiment chosen by hand" if experiment else
                            f"the best dev mean over its seeds ({mean:.3f})") +
    f"; dev examples scored: {', '.join(f'{task} {len(frame):,}' for task, frame in frames.items())}."))
"""),
    md("## SST confusion matrix"),
    code("""
sst = frames["sst"]
true, predicted, share = analysis.most_confused(sst["label"], sst["prediction"])
display(Markdown(
    f"SST accuracy {sst['correct'].mean():.3f}. The most frequent confusion: {share:.0%} of the *{true}* "
    f"sentences are predicted *{predicted}*; {(sst['abs_error'] >= 2).mean():.1%} of all predictions are two "
    "or more classes off."))
figures.plot_confusion_matrix(sst["label"], sst["prediction"], f"{figures_dir}/06_sst_confusion.png")
"""),
    md("## The worst errors, by length and by class, per task"),
    code("""
for task, frame in frames.items():
    display(Markdown(f"### {task}: worst errors"),
            analysis.with_label_names(analysis.worst_errors(frame, task, n_worst), task),
            Markdown(f"### {task}: errors by input length"), analysis.errors_by_length(frame, task),
            Markdown(f"### {task}: errors by class"), analysis.errors_by_class(frame, task))
"""),
    code("""
by_length = {task: analysis.errors_by_length(frame, task) for task, frame in frames.items()}
display(Markdown(
    "From the shortest to the longest quarter of inputs, SST accuracy goes from "
    f"{by_length['sst']['accuracy'].iloc[0]:.3f} to {by_length['sst']['accuracy'].iloc[-1]:.3f}, Quora accuracy from "
    f"{by_length['para']['accuracy'].iloc[0]:.3f} to {by_length['para']['accuracy'].iloc[-1]:.3f}, and the STS "
    f"mean absolute error from {by_length['sts']['mean_abs_error'].iloc[0]:.2f} to "
    f"{by_length['sts']['mean_abs_error'].iloc[-1]:.2f}."))
"""),
]


def build(name: str, cells: list) -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    for i, (kind, source, tags) in enumerate(cells):
        cell = nbformat.v4.new_code_cell(source) if kind == "code" else nbformat.v4.new_markdown_cell(source)
        cell.id = f"{name.replace('_', '-')}-{i:02d}"
        if tags:
            cell.metadata["tags"] = tags
        notebook.cells.append(cell)
    nbformat.validate(notebook)
    return notebook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 on a difference")
    parser.add_argument("--out", type=Path, default=ROOT / "notebooks")
    args = parser.parse_args(argv)
    stale = []
    for name, cells in NOTEBOOKS.items():
        path = args.out / f"{name}.ipynb"
        text = nbformat.writes(build(name, cells)) + "\n"
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for path in stale:
        print(f"{path}: differs from scripts/make_notebooks.py (run it to regenerate)", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
