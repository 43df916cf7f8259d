"""The tooling behind ``fastseg bench``; the core never imports it.

* :mod:`fastseg.bench.stages` — the main job stage by stage in fresh processes, the recipes
  beside it in process, and sizing for a target;
* :mod:`fastseg.bench.whole` — ``--whole-process``: ``fastseg score`` and the recipes as fresh
  processes, start to exit, on the customer-id shapes real stores have;
* :mod:`fastseg.bench.baselines` — the pandas, Polars and DuckDB recipes users write instead.
"""
