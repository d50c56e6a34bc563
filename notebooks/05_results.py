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
# # 05 Results
#
# Every run under `results/runs/`, summarised per experiment over its seeds (mean ± std and
# a 95% t-interval), beside the report's single-run number from its Table 2, with each row's
# paired difference to the row it builds on (its parent in params.yaml's `pipeline.rows`).

# %% tags=["parameters"]
params = "params.yaml"
runs_dir = "results/runs"
table_csv = "results/table.csv"
table_md = "results/table.md"
figures_dir = "figures"
compromise = "hidden_compromise" # Gradient Compromise ...
annealed = "hidden"              # ... against the annealed sampler it builds on

# %% tags=["hide-input"]
from pathlib import Path

from IPython.display import Markdown

from mtlib.training.provenance import runs_header

Markdown(runs_header(sorted(Path(runs_dir).glob("*/seed*/metrics.json"))))

# %%
# %matplotlib inline
from pathlib import Path

from IPython.display import Markdown, display

from mtlib.study import analysis, figures, plotting
from mtlib.config import read_params
from mtlib.study.report import REPORT_TABLE2, collect_histories, collect_runs, summarise, write_table

pipeline = read_params(params)["pipeline"]
runs = collect_runs(runs_dir)
summary = summarise(runs, pipeline["rows"])
write_table(summary, table_csv, table_md)

# %% tags=["hide-input"]
Markdown(Path(table_md).read_text())

# %%
best = summary.loc[summary["mean_mean"].idxmax()]
report_best = max(REPORT_TABLE2, key=lambda label: REPORT_TABLE2[label][3])
rho, n_both = analysis.rank_agreement(summary)
beaten = summary.dropna(subset=["mean_report"])

# %% tags=["hide-input"]
Markdown(
    f"{len(runs)} runs of {summary['experiment'].nunique()} experiments. The best dev mean is "
    f"**{best['experiment']}** ({best['label'] or 'no report row'}): {best['mean_mean']:.3f} ± "
    f"{best['mean_std']:.3f} over {best['n_seeds']} seed(s); the report's best row is *{report_best}* "
    f"({REPORT_TABLE2[report_best][3]:.3f}). Over the {n_both} experiments with a report number, the Spearman "
    f"rank correlation between our means and the report's is {rho:.2f}; {int((beaten['mean_mean'] > beaten['mean_report']).sum())} "
    f"of them score above the report's number (see the caveat above the table on the backbone).")

# %% [markdown]
# ## This study beside the report

# %% tags=["hide-input"]
figures.plot_report_comparison(summary, f"{figures_dir}/05_report_comparison.png")

# %% [markdown]
# ## Score against task-specific parameters
#
# Everything but the heads (and PALs) is shared; the x-axis counts what each task owns.

# %% tags=["hide-input"]
figures.plot_score_vs_parameters(summary, f"{figures_dir}/05_score_vs_parameters.png")

# %% [markdown]
# ## Learning curves
#
# Dev mean against training examples seen, mean ± std over seeds, one figure per family of
# experiments, each drawn against the setting it builds on. The random predictor does not
# train and single-task runs have no dev mean: they are in the table only.

# %%
histories = collect_histories(runs_dir)
groups = analysis.curve_groups(pipeline["rows"], sorted(set(histories["experiment"])))

# %% tags=["hide-input"]
for group, names in groups.items():
    display(plotting.plot_learning_curves(analysis.select_experiments(histories, names),
                                          f"{figures_dir}/05_learning_curves/{group}.png",
                                          title=f"Dev mean during training: {group}"))

# %% [markdown]
# ## Gradient Compromise against the annealed sampler
#
# The report's Figure 5 claims Gradient Compromise learns much faster in the first epochs.
# Examples seen is the fair x-axis: one Gradient Compromise update consumes a whole group of
# batches.

# %% tags=["hide-input"]
figures.plot_compromise_vs_annealed(histories, f"{figures_dir}/05_compromise_vs_annealed.png",
                                    compromise=compromise, annealed=annealed)
