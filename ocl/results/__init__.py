"""Results across runs: read runs (local run folders or the W&B API), summarise them over seeds
(mean ± sample std per experiment, method, dataset and metric) and report them as markdown, CSV
and a bar chart. ``scripts/compare_runs.py`` is the command line."""
