"""Running semvlp_jax on Cloud TPU with the gcloud CLI: `python -m launch.tpu --help`.

- `gcloud.py`: the capacity (a TPU VM or a queued resource) and every gcloud command, built as an
  argument list by a pure function, plus the shell scripts the workers run;
- `workers.py`: one ssh per worker, side by side, each to its own log file, fail fast;
- `tpu.py`: the command line, the waits, the copy and install, and the `--until-done` loop.

Nothing here imports JAX or the trainer: the launcher runs on a laptop.
"""
