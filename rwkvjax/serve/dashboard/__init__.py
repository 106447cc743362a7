"""Live dashboard of a training run: a read-only page that follows its metrics.jsonl, checkpoints and named states.

`cli.py dashboard --ckpt-dir DIR` serves it alone; `cli.py serve --dashboard DIR` mounts it at /dashboard.
"""
