"""Command line: `python -m semvlp_jax.main --config configs/demo.py --workdir DIR`.

Any config key can be overridden, e.g. `--config.total_steps=100 --config.model.num_layers=2`.
Multi-host: add `--multihost` on every host (on TPU that is all; elsewhere also
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I`).
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from semvlp_jax import config_checks, train
from semvlp_jax.checkpoint import DiskFullError
from semvlp_jax.parallel import multihost
from semvlp_jax.progress import show_progress
from semvlp_jax.workdir_lock import WorkdirLocked

config_flags.DEFINE_config_file(
    'config', None, 'Python config file (get_config(arg)).', lock_config=True
)
flags.DEFINE_string(
    'workdir',
    None,
    'Run directory: checkpoints, tokenizer cache, TensorBoard, metrics. Reusing it resumes.',
)
flags.DEFINE_bool(
    'multihost', False, 'Join the other processes of a multi-host run (jax.distributed).'
)
flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 (not needed on TPU).')
flags.DEFINE_integer('num_processes', None, 'Number of processes (not needed on TPU).')
flags.DEFINE_integer('process_id', None, 'This process (not needed on TPU).')
flags.mark_flags_as_required(['config', 'workdir'])


FLAGS = flags.FLAGS
# Exit status after a SIGTERM or preemption stop (128 + SIGTERM, as if the signal had killed us),
# so a scheduler treats the run as interrupted, not finished.
PREEMPTED_EXIT_CODE = 143


def main(argv):
    del argv
    show_progress()
    if FLAGS.multihost:
        multihost.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    try:
        train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except config_checks.ConfigError as e:
        raise app.UsageError(f'invalid config: {e}') from None
    except train.Preempted as e:
        logging.warning('%s', e)
        sys.exit(PREEMPTED_EXIT_CODE)
    except (WorkdirLocked, DiskFullError) as e:  # one line says it all; no traceback
        logging.error('%s', e)
        sys.exit(1)


if __name__ == '__main__':
    app.run(main)
