"""Input workers (`config.data.input_workers`): batches made in worker processes are the batches
made without them, and their position is saved and restored exactly (through grain's
checkpoint handler in the run's `Checkpoints`); a position saved with another worker count is
refused."""

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import demo
from semvlp_jax import checkpoint, config_checks
from semvlp_jax.data import pipeline
from semvlp_jax.data.input_workers import batch_iterator
from semvlp_jax.errors import ConfigError
from semvlp_jax.train_step import TrainState
from tests.conftest import tiny_config


def assert_same(expected, got):
    assert len(expected) == len(got)
    for want, have in zip(expected, got):
        assert want.keys() == have.keys()
        for field in want:
            np.testing.assert_array_equal(have[field], want[field], err_msg=field)


def small_batches() -> grain.MapDataset:
    """Batches of a random map: values from each example's rng, so a wrong seed or order shows.
    The map is a local function, so workers receive it by value and import nothing for it."""

    def noisy(index, rng):
        return {'index': np.int64(index), 'noise': rng.normal(size=3).astype(np.float32)}

    examples = grain.MapDataset.range(24).shuffle(seed=3).repeat().random_map(noisy, seed=5)
    return pipeline.local_batches(examples, 4, process_index=0, process_count=1)


def read(iterator, count):
    return [next(iterator) for _ in range(count)]


@pytest.fixture(scope='module')
def reference():
    """The first 8 batches without workers, read by one uninterrupted iterator."""
    iterator = batch_iterator(small_batches(), reader_threads=1)
    return read(iterator, 8)


def test_synthetic_pretraining_batches_are_the_same_with_two_workers(tmp_path):
    config = tiny_config()

    def train_batches(workers):
        config.data.input_workers = workers
        data = pipeline.synthetic_pretraining(config.data, tmp_path, batch_size=8, seed=0)
        try:
            return read(data.train, 3)
        finally:
            data.train.close()

    assert_same(train_batches(0), train_batches(2))


def test_a_position_of_another_worker_count_is_refused():
    # States of iterators not yet started: no worker process is needed to refuse one.
    two = batch_iterator(small_batches(), reader_threads=1, workers=2).get_state()
    zero = batch_iterator(small_batches(), reader_threads=1).get_state()
    for saved, now, state in ((2, 1, two), (2, 0, two), (0, 2, zero)):
        iterator = batch_iterator(small_batches(), reader_threads=1, workers=now)
        with pytest.raises(ConfigError) as error:
            iterator.set_state(state)
        assert (
            f'saved with config.data.input_workers={saved} but this run has '
            f'config.data.input_workers={now}' in str(error.value)
        )


def test_the_worker_count_is_checked_with_the_config():
    config = demo.get_config()
    config.data.input_workers = 2
    config_checks.validate(config, num_devices=8)
    config.data.input_workers = -1
    with pytest.raises(ConfigError, match=r'config\.data\.input_workers=-1 must be an integer'):
        config_checks.validate(config, num_devices=8)


def test_without_workers_positions_restore_as_before(reference):
    first = batch_iterator(small_batches(), reader_threads=1)
    read(first, 3)
    state = first.get_state()
    assert state == {'input_workers': 0, 'iterator': {'next_index': 3}}
    again = batch_iterator(small_batches(), reader_threads=0)
    again.set_state(state)
    assert_same(reference[3:5], read(again, 2))
    # A position written before the worker count was recorded is grain's own state.
    legacy = batch_iterator(small_batches(), reader_threads=1)
    legacy.set_state({'next_index': 6})
    assert_same(reference[6:8], read(legacy, 2))


def tiny_state(step: int) -> TrainState:
    state = TrainState.create({'w': jnp.arange(3.0)}, {'mu': jnp.zeros(3)}, jax.random.key(0))
    return state.replace(step=jnp.int32(step))


def abstract(state: TrainState) -> TrainState:
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
    )


def test_checkpoints_resume_two_workers_exactly_and_refuse_another_count(reference, tmp_path):
    first = batch_iterator(small_batches(), reader_threads=1, workers=2)
    # 5 batches: worker 0 has made 3, worker 1 two; the next comes from worker 1.
    assert_same(reference[:5], read(first, 5))
    with checkpoint.Checkpoints(tmp_path, keep=2) as checkpoints:
        assert checkpoints.save(tiny_state(5), first, meta={'start_metrics': {}})
        # The trainer reads on while the checkpoint is written.
        assert_same(reference[5:7], read(first, 2))
    first.close()
    saved = (tmp_path / 'checkpoints' / '5' / 'data' / 'process_0-of-1.json').read_text()
    assert '"input_workers": 2' in saved

    again = batch_iterator(small_batches(), reader_threads=1, workers=2)
    with checkpoint.Checkpoints(tmp_path, keep=2) as checkpoints:
        state, meta = checkpoints.restore_latest(abstract(tiny_state(0)), again)
    assert int(state.step) == 5 and meta['step'] == 5
    assert_same(reference[5:8], read(again, 3))
    again.close()

    fewer = batch_iterator(small_batches(), reader_threads=1)
    with checkpoint.Checkpoints(tmp_path, keep=2) as checkpoints:
        with pytest.raises(ConfigError, match='config.data.input_workers=2 but this run has'):
            checkpoints.restore_latest(abstract(tiny_state(0)), fewer)
    assert (tmp_path / 'checkpoints' / '5').is_dir(), 'a config mismatch must not move it aside'
