"""Invalid configs fail before anything is built, with a message naming the key."""

import pytest

from configs import demo
from semvlp_jax.config_checks import ConfigError, validate


def test_demo_config_is_valid():
    assert validate(demo.get_config(), num_devices=8).modes == ('single', 'two')


@pytest.mark.parametrize(
    'override, key',
    [
        (lambda c: c.model.update(num_cross_layers=0), 'config.model.num_cross_layers'),
        (lambda c: c.model.update(num_cross_layers=5), 'config.model.num_cross_layers'),
        (lambda c: c.model.update(num_heads=3), 'config.model.num_heads'),
        (lambda c: c.update(schedule='sometimes'), 'config.schedule'),
        (lambda c: c.update(batch_size=60), 'config.batch_size'),
        (lambda c: c.objectives.single.update(mlmm=1.0), 'config.objectives.single.mlmm'),
        (lambda c: c.objectives.update(three={'mlm': 1.0}), 'config.objectives.three'),
        (lambda c: setattr(c.objectives, 'two', {}), 'config.objectives.two'),
        (lambda c: c.optimizer.update(decay='step'), 'config.optimizer.decay'),
        (lambda c: c.update(total_steps=0), 'config.total_steps'),
        (lambda c: c.update(eval_batches=100), 'config.eval_batches'),
        (lambda c: c.update(microbatches=3), 'config.microbatches'),
        (lambda c: c.model.update(visual_input='pixels'), 'config.model.visual_input'),
        (lambda c: c.update(best_metric='val/three/loss'), 'config.best_metric'),
        (lambda c: c.update(best_metric='itm_accuracy'), 'config.best_metric'),
        (lambda c: c.update(best_metric_goal='highest'), 'config.best_metric_goal'),
        (lambda c: c.nonfinite.update(policy='ignore'), 'config.nonfinite.policy'),
        (lambda c: c.update(checkpoint_every=0), 'config.checkpoint_every'),
    ],
)
def test_invalid_values_name_the_key(override, key):
    config = demo.get_config()
    override(config)
    with pytest.raises(ConfigError, match=key.replace('.', r'\.')):
        validate(config, num_devices=8)


def test_single_only_schedule_needs_no_two_stream_objectives():
    config = demo.get_config()
    config.schedule = 'single'
    config.objectives.two = {}
    with pytest.raises(ConfigError, match='config.best_metric'):  # a two-stream metric
        validate(config, num_devices=1)
    config.best_metric = 'val/single/itm_accuracy'
    assert validate(config, num_devices=1).modes == ('single',)
