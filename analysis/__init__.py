"""Analysis of sweeps: run records (or a W&B export) → a pandas DataFrame → the paper's tables, plots, notebooks.

- `analysis.collect`: run records → one tidy DataFrame (`collect(runs_dir)`), or from a W&B runs export.
- `analysis.reference`: the paper's reported numbers (`reference/paper_tables.csv`) as records and frames.
- `analysis.tables`: one function per paper table (1, 2, 3a, 3b, 4, 5) and the cost tables, in Markdown,
  LaTeX or HTML; `python -m analysis.tables --runs RUNS --table 4 --format md [--reference]`.
- `analysis.plots`: score vs model size, score vs cost (Pareto front), loss curves;
  `python -m analysis.plots --runs RUNS --out DIR`.
- `analysis.publish`: a sweep's tables and plots into one W&B run of job type `analysis`;
  `python -m analysis.publish --runs RUNS --sweep NAME`.
- `analysis.dashboard`: the sweep's W&B workspace as code (wandb-workspaces), saved or written as a spec.
- `analysis/notebooks/`: notebooks that regenerate the tables and plots from `LMM_RUNS`.
"""
