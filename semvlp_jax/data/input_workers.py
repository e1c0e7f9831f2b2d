"""Input workers: the batches of a pipeline made in `config.data.input_workers` processes.

Why processes: making a pre-training example is Python and PIL work (decoding a JPEG,
cropping, flipping and RandAugment at 224 px, tokenising, masking). `config.data.reader_threads`
reads ahead in threads, but threads share one interpreter lock, so on a many-core host they make
about one core's worth of examples. grain's multiprocess prefetch (`IterDataset.mp_prefetch`)
runs the pipeline in N worker processes instead, each with its own interpreter (and its
`reader_threads` threads), and hands the batches back through shared memory.

What the workers receive: grain spawns them and sends them the pipeline pickled (cloudpickle).
Built datasets' records are tfds data sources over ArrayRecord files, which pickle as the files'
paths and are read from the files in each worker; the synthetic scenes pickle as their config
(`synthetic.CachedScenes` leaves its cache behind) and each worker generates and keeps the scenes
it reads, a cache per process. Workers import `jax` (grain's profiler and our modules do) but
never start a backend: nothing in the transforms calls into JAX, and `_worker_init` pins any
later use to the CPU so a worker can never take the host's accelerators.

Order: grain slices the batched dataset after all its transformations, worker i of N making
batches i, i + N, i + 2N, ..., and reads the workers round robin, so batch b is the same batch
in the same place as without workers (the pipelines have no filter; `random_map` seeds each
example from its index, not from the process that makes it). Tests check it value for value.

Resuming: the iterator's state (what `grain.checkpoint.CheckpointSave` writes as JSON, one file
per host process) is `{'input_workers': N, 'iterator': grain's state}`; with workers grain's state
holds a position per worker, so a run resumes with the worker count it was saved with, and any
other count is refused with a `ConfigError` naming both. A state without the count (written
before the key existed) is one of an iterator without workers.
"""

from __future__ import annotations

import atexit
import sys
import weakref
from typing import Any

import grain
import numpy as np
from absl import flags

from semvlp_jax.errors import ConfigError

KEY = 'config.data.input_workers'
# Batches each worker holds ready besides those its reader threads read ahead: two keep the
# trainer fed across a slow batch without multiplying a large batch's memory.
PER_WORKER_BUFFER = 2
# Batches read ahead by the reader threads (of the process, or of each worker).
READ_AHEAD = 4
# grain 0.2.18 reads this flag when it starts workers, and absl refuses a read before the
# command line is parsed (a notebook, a test, any script without `absl.app`); google/grain#1355.
_GRAIN_PROFILING_FLAG = 'grain_enable_multiprocess_worker_profiling'


class InputIterator(grain.DatasetIterator):
    """A checkpointable iterator over batches whose state records its worker count.

    A `grain.DatasetIterator`, so `grain.checkpoint.CheckpointSave/Restore` write and read its
    state as JSON; `close()` stops the workers (garbage collection does too).
    """

    def __init__(self, iterator: grain.DatasetIterator, workers: int):
        super().__init__(iterator)  # close() and start_prefetch() reach the workers
        self._iterator = iterator
        self.workers = workers
        if workers:
            # Before the interpreter tears its modules down, when grain's clean-up of an
            # iterator still open would fail with a page of ignored errors.
            atexit.register(_close_at_exit, weakref.ref(self))

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self._open())

    def get_state(self) -> dict[str, Any]:
        return {'input_workers': self.workers, 'iterator': self._open().get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        if 'input_workers' in state:
            saved, position = state['input_workers'], state['iterator']
        else:  # grain's own state, saved before the worker count was recorded: no workers
            saved, position = 0, state
        if saved != self.workers:
            raise ConfigError(
                f'the input position to resume from was saved with {KEY}={saved} but this run '
                f'has {KEY}={self.workers}; it holds one position per worker, so resume with '
                f'{KEY}={saved}'
            )
        self._open().set_state(position)

    def _open(self) -> grain.DatasetIterator:
        if self._iterator is None:
            raise ValueError(f'{self} is closed')
        return self._iterator

    def close(self) -> None:
        """Stops the workers and lets go of grain's iterators, so they are freed now."""
        super().close()
        self._parents = ()
        self._iterator = None

    def __str__(self) -> str:
        return f'InputIterator(input_workers={self.workers})'


def _close_at_exit(iterator: weakref.ref[InputIterator]) -> None:
    live = iterator()
    if live is not None:
        live.close()


def batch_iterator(
    batches: grain.MapDataset, *, reader_threads: int, workers: int = 0
) -> InputIterator:
    """A checkpointable iterator over `batches`, made in `workers` processes (0: in this one),
    each reading ahead with `reader_threads` threads."""
    if workers < 0:
        raise ConfigError(f'{KEY}={workers} must be >= 0')
    read = grain.ReadOptions(num_threads=reader_threads, prefetch_buffer_size=READ_AHEAD)
    dataset = batches.to_iter_dataset(read)
    if workers:
        _allow_unparsed_flags()
        dataset = dataset.mp_prefetch(
            grain.MultiprocessingOptions(
                num_workers=workers, per_worker_buffer_size=PER_WORKER_BUFFER
            ),
            worker_init_fn=_worker_init,
        )
    return InputIterator(iter(dataset), workers)


def _allow_unparsed_flags() -> None:
    """Lets grain read its worker-profiling flag (its default) when absl has parsed no command
    line; a parsed command line, `python -m semvlp_jax.main`'s, is left alone."""
    if flags.FLAGS.is_parsed() or _GRAIN_PROFILING_FLAG not in flags.FLAGS:
        return
    flag = flags.FLAGS[_GRAIN_PROFILING_FLAG]
    if not flag.present:
        flag.present = 1  # readable before parsing; its value stays the default


def _worker_init(worker_index: int, worker_count: int) -> None:
    """In each worker before it reads: JAX, if anything ever uses it there, runs on the CPU."""
    del worker_index, worker_count
    jax = sys.modules.get('jax')
    if jax is not None:
        jax.config.update('jax_platforms', 'cpu')
