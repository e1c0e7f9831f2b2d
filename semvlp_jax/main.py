"""Command line: `python -m semvlp_jax.main --config configs/demo.py --workdir DIR`.

Any config key can be overridden, e.g. `--config.total_steps=100 --config.model.num_layers=2`.
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from semvlp_jax import config_checks, train

config_flags.DEFINE_config_file(
    'config', None, 'Python config file (get_config(arg)).', lock_config=True
)
flags.DEFINE_string('workdir', None, 'Directory for the tokenizer cache, TensorBoard and metrics.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
    del argv
    logging.set_verbosity(logging.INFO)
    try:
        train.train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)
    except config_checks.ConfigError as e:
        raise app.UsageError(f'invalid config: {e}') from None


if __name__ == '__main__':
    app.run(main)
