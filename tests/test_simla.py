"""The SIMLA recipe over the shared machinery: the fuse mode's passes, the momentum teacher and
queues in the train state (EMA formula, skipped steps, FSDP = one device), the recipe's config
checks, and the demo config through the command line, killed and resumed bit-identically.

One tiny SIMLA (2 fused layers of width 32, a 1-layer ViT over 16 patches, 64 codes)."""

import random
import signal
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from configs import simla_demo
from semvlp_jax import train
from semvlp_jax.config_checks import validate
from semvlp_jax.data import pipeline
from semvlp_jax.errors import ConfigError
from semvlp_jax.models.semvlp import SemVLP, unmasked_text_ids
from semvlp_jax.parallel import mesh as mesh_lib
from semvlp_jax.progress import read_history
from semvlp_jax.simla import momentum as momentum_lib
from semvlp_jax.simla.targets import teacher_targets
from semvlp_jax.train_step import make_itm_pairs
from tests.conftest import (
    CLI_ENV,
    ROOT,
    cli_command,
    compiled_training,
    overridden,
    override_flags,
    run_cli,
)

# The tiny SIMLA as command-line overrides of configs/simla_demo.py (the in-process tests apply
# the same ones), so the command-line runs and the in-process steps share compiled programs.
TINY_SIMLA = {
    'batch_size': 8,
    'eval_batches': 1,
    'model.num_layers': 2,
    'model.num_cross_layers': 2,
    'model.hidden_size': 32,
    'model.num_heads': 2,
    'model.mlp_size': 64,
    'model.image_size': 32,
    'model.patch_size': 8,
    'model.vision_tower.num_layers': 1,
    'model.vision_tower.width': 32,
    'model.vision_tower.num_heads': 2,
    'model.vision_tower.mlp_size': 64,
    'model.contrastive_dim': 16,
    'model.patch_head.codes': 64,
    'model.patch_head.dim': 8,
    'momentum.queue_size': 32,
    'momentum.alpha_ramp_steps': 4,
    'optimizer.warmup_steps': 0,
    'optimizer.learning_rate': 3e-3,
    'data.num_train': 64,
    'data.num_val': 16,
}
CLI_STEPS = 30
CLI_FLAGS = (
    *override_flags(TINY_SIMLA),
    f'--config.total_steps={CLI_STEPS}',
    '--config.log_every=1',
    '--config.checkpoint_every=5',
    f'--config.eval_every={CLI_STEPS}',
)


def tiny_simla_config():
    return overridden(simla_demo.get_config(), TINY_SIMLA)


@pytest.fixture(scope='module')
def simla_data(tmp_path_factory):
    config = tiny_simla_config()
    return pipeline.synthetic_pretraining(
        config.data,
        tmp_path_factory.mktemp('simla_data'),
        batch_size=config.batch_size,
        seed=0,
        pixel_input=pipeline.PixelInput.of(config.model),
    )


@pytest.fixture(scope='module')
def simla_batch(simla_data):
    return jax.tree.map(np.asarray, next(iter(simla_data.val)))


def test_the_fuse_mode_passes_read_what_simla_says(simla_data, simla_batch):
    config = tiny_simla_config()
    model = SemVLP(config.model, simla_data.dims, rngs=nnx.Rngs(params=0))
    batch = make_itm_pairs(simla_batch, jax.random.key(0), 0.0)
    encoded = model(batch, mode='fuse')
    other_pixels = {**batch, 'pixels': batch['pixels'][::-1]}
    swapped = model(other_pixels, mode='fuse')
    # The caption alone never reads the image; the fused text does.
    np.testing.assert_array_equal(swapped.unimodal_text, encoded.unimodal_text)
    assert np.abs(swapped.text - encoded.text).max() > 1e-3
    # The image-side pass: the masked image's patches query the caption's embeddings.
    other_text = {
        **batch,
        'text_ids': batch['text_ids'][::-1],
        'text_mask': batch['text_mask'][::-1],
    }
    other_text.update({k: batch[k][::-1] for k in ('mlm_positions', 'mlm_targets', 'mlm_weights')})
    recaptioned = model(other_text, mode='fuse')
    assert np.abs(recaptioned.masked_image - encoded.masked_image).max() > 1e-3
    np.testing.assert_array_equal(recaptioned.image, encoded.image)  # keys: the image alone
    # ...and the masked patches are what the masked image differs in.
    unmasked = model({k: v for k, v in batch.items() if k != 'patch_mask'}, mode='fuse')
    assert unmasked.masked_image is None
    # ITM's positive pairs fuse the *unmasked* caption: encoding the caption with its MLM
    # masks undone gives the same pooled output.
    rows = jnp.arange(batch['text_ids'].shape[0])
    restored = {**batch, 'text_ids': unmasked_text_ids(batch)}
    restored = {k: v for k, v in restored.items() if not k.startswith('mlm_')}
    np.testing.assert_allclose(
        model.match(encoded.fusion, rows, rows), model(restored, mode='fuse').pooled, atol=1e-5
    )
    # The masked words really are back: the restored ids hold each target at its position.
    positions, targets = batch['mlm_positions'], batch['mlm_targets']
    got = np.take_along_axis(np.asarray(restored['text_ids']), positions, axis=1)
    np.testing.assert_array_equal(got[batch['mlm_weights'] > 0], targets[batch['mlm_weights'] > 0])
    assert (batch['text_ids'] != restored['text_ids']).any()


def simla_run(data, batch, axes, preset, steps=2, then_nan=False):
    config = overridden(tiny_simla_config(), {'parallel.preset': preset})
    model, state, step, batch = compiled_training(config, data.dims, batch, axes)
    states, metrics = [jax.device_get(state)], []
    for _ in range(steps):
        state, step_metrics = step(state, batch, step_mode='fuse')
        states.append(jax.device_get(state))
        metrics.append(jax.device_get(step_metrics))
    if then_nan:  # a step on a broken batch: skipped
        broken = {**batch, 'pixels': jnp.full_like(batch['pixels'], jnp.nan)}
        state, step_metrics = step(state, broken, step_mode='fuse')
        states.append(jax.device_get(state))
        metrics.append(jax.device_get(step_metrics))
    return model, state, states, metrics


def test_teacher_and_queues_follow_the_formula_and_fsdp_equals_one_device(simla_data, simla_batch):
    model, _, states, metrics = simla_run(
        simla_data, simla_batch, {'data': 1}, 'data_parallel', then_nan=True
    )
    before, after = states[0], states[1]
    # The teacher starts as the parameters, then moves by the EMA of the new parameters only
    # (never by the optimizer: no weight decay, no Adam step).
    jax.tree.map(np.testing.assert_array_equal, before.teacher, before.params)
    want = momentum_lib.ema_update(before.teacher, after.params, 0.995)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), after.teacher, want
    )
    moved = jax.tree.leaves(
        jax.tree.map(lambda t, p: np.abs(t - p).max(), after.teacher, after.params)
    )
    assert max(moved) > 0
    # The queues got the teacher's features of the batch at the pointer, with their image keys.
    paired = make_itm_pairs(simla_batch, jax.random.key(0), 0.0)
    features = teacher_targets(
        before.teacher, paired, graphdef=model.graphdef, names=['itc_momentum']
    )['itc_momentum']
    size = simla_batch['text_ids'].shape[0]
    assert int(after.queues.pointer) == size and int(states[2].queues.pointer) == 2 * size
    np.testing.assert_allclose(after.queues.image[:size], features['image'], atol=1e-5)
    np.testing.assert_allclose(after.queues.text[:size], features['text'], atol=1e-5)
    np.testing.assert_array_equal(after.queues.image_key[:size], simla_batch['image_key'])
    assert (after.queues.image_key[size:] == -1).all()
    # alpha ramps over 4 steps to 0.4: 0 at step 0, 0.1 at step 1.
    np.testing.assert_allclose(
        [m['distillation_alpha'] for m in metrics[:2]], [0.0, 0.1], rtol=1e-6
    )
    # A skipped step (NaN pixels) changes neither the teacher nor the queues.
    assert [int(m['skipped']) for m in metrics] == [0, 0, 1]
    jax.tree.map(np.testing.assert_array_equal, states[3].teacher, states[2].teacher)
    jax.tree.map(np.testing.assert_array_equal, states[3].queues, states[2].queues)
    for name in ('itc_momentum', 'itm_hard', 'xmm_text', 'xmm_image', 'psl'):
        assert np.isfinite(metrics[1][f'fuse/{name}_loss']) and metrics[1][f'fuse/{name}_loss'] > 0

    # FSDP over 8 devices: the same losses, parameters, teacher and queues.
    _, state, fsdp_states, fsdp_metrics = simla_run(
        simla_data, simla_batch, {'data': 2, 'fsdp': 4}, 'fsdp'
    )
    np.testing.assert_allclose(
        [m['fuse/loss'] for m in fsdp_metrics], [m['fuse/loss'] for m in metrics[:2]], rtol=2e-5
    )
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=5e-5)  # noqa: E731
    jax.tree.map(close, fsdp_states[-1].teacher, states[2].teacher)
    jax.tree.map(close, fsdp_states[-1].queues, states[2].queues)
    kernel = state.teacher['encoder']['layers'][0]['feed_forward']['expand']['kernel']
    assert (
        kernel.sharding
        == state.params['encoder']['layers'][0]['feed_forward']['expand']['kernel'].sharding
    )
    assert kernel.sharding.spec != jax.P()


@pytest.mark.parametrize(
    'overrides, message',
    [
        ({'momentum.queue_size': 20}, 'must divide by the global batch 8'),
        ({'microbatches': 2}, 'gradient accumulation would need the features'),
        (
            {'schedule': 'two', 'objectives': {'two': {'itm': 1.0}}, 'best_metric': ''},
            'the teacher runs in the fuse mode',
        ),
        ({'model.concept_head': False}, 'psl predicts keywords with the concept head'),
        ({'data.patch_mask.count': 0}, 'xmm_image needs masked patches'),
        ({'model.patch_head.tokenizer': 'dvae'}, "patch_head.tokenizer='dvae'"),
    ],
)
def test_the_recipe_config_checks_name_the_key(overrides, message):
    config = overridden(tiny_simla_config(), overrides)
    with pytest.raises(ConfigError, match=message):
        validate(config, num_devices=1)


def test_the_recipe_objectives_need_the_fuse_mode_and_a_teacher():
    config = tiny_simla_config()
    config.objectives = {'two': {'itm_hard': 1.0}}
    config.schedule, config.best_metric = 'two', ''
    with pytest.raises(ConfigError, match='run in the fuse mode only'):
        validate(config, num_devices=1)
    config = tiny_simla_config()
    del config['momentum']
    with pytest.raises(ConfigError, match='needs the momentum teacher'):
        validate(config, num_devices=1)


# ---------------------------------------------------------------------------- command line


def simla_command(workdir) -> list[str]:
    return cli_command(workdir, *CLI_FLAGS, config='configs/simla_demo.py')


def losses_by_step(workdir) -> dict[int, dict]:
    return {r['step']: r for r in read_history(workdir / 'train_history.jsonl')}


def final_state(workdir):
    steps = sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())
    return ocp.PyTreeCheckpointer().restore(workdir / 'checkpoints' / str(steps[-1]) / 'state')


@pytest.fixture(scope='module')
def simla_cli_run(tmp_path_factory):
    """configs/simla_demo.py (tiny) through `python -m semvlp_jax.main`, uninterrupted."""
    workdir = tmp_path_factory.mktemp('simla_cli_run')
    result = run_cli(workdir, *CLI_FLAGS, config='configs/simla_demo.py')
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result.stdout


def test_simla_demo_through_the_cli_resumes_bit_identically_after_sigkill(simla_cli_run, tmp_path):
    reference, table = simla_cli_run
    # The run's report: the recipe's metrics, per step and at the end.
    for metric in (
        'itc_accuracy',
        'itm_accuracy',
        'xmm_text_accuracy',
        'xmm_image_accuracy',
        'psl_precision',
    ):
        assert f'fuse    {metric}' in table, table
    want = losses_by_step(reference)
    assert sorted(want) == list(range(1, CLI_STEPS + 1))
    assert want[CLI_STEPS]['train/fuse/xmm_text_loss'] < want[1]['train/fuse/xmm_text_loss']

    resumed = tmp_path / 'killed'
    process = subprocess.Popen(
        simla_command(resumed),
        cwd=ROOT,
        env=CLI_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    kill_after = random.Random(0).randint(8, 22)
    path = resumed / 'train_history.jsonl'
    while process.poll() is None:
        try:
            if read_history(path) and read_history(path)[-1]['step'] >= kill_after:
                break
        except (FileNotFoundError, ValueError):  # not there yet, or a half-written line
            pass
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=600)
    assert read_history(path)[-1]['step'] < CLI_STEPS, 'the run ended before the kill'
    result = run_cli(resumed, *CLI_FLAGS, config='configs/simla_demo.py')
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'resumed from the checkpoint at step' in result.stderr
    got = losses_by_step(resumed)
    for step in range(1, CLI_STEPS + 1):
        assert got[step] == want[step], f'step {step} differs after resuming'
    restored, reference_state = final_state(resumed), final_state(reference)
    assert 'teacher' in restored and 'queues' in restored
    jax.tree.map(np.testing.assert_array_equal, restored, reference_state)


def fine_tune_config(module, arg: str):
    """A fine-tuning config of the tiny SIMLA (its model sizes; no teacher)."""
    config = module.get_config(arg)
    for key, value in TINY_SIMLA.items():
        if key.startswith('momentum.'):
            continue
        *parents, leaf = key.split('.')
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    config.update(total_steps=2, eval_every=2, checkpoint_every=2, log_every=1)
    return config


def test_retrieval_fine_tunes_from_a_simla_run(simla_cli_run, tmp_path, caplog):
    """Its ITM re-ranks on the fused [CLS], as VQA's and NLVR2's heads read it (their configs
    in the fuse mode are checked in `test_the_paper_config...`)."""
    from configs import finetune_retrieval

    run, _ = simla_cli_run
    config = fine_tune_config(finetune_retrieval, f'init={run},mode=fuse')
    config.task.update(eval_images=8, shortlist_k=4)
    with caplog.at_level('INFO', logger='absl'):
        metrics = train.train_and_evaluate(config, str(tmp_path / 'retrieval'))
    # Everything but the pre-training-only heads came from the SIMLA run.
    (line,) = [r.getMessage() for r in caplog.records if 'initialised from' in r.getMessage()]
    assert 'new (initialised) 0' in line, line
    for key in ('t2i_r1', 'i2t_r1', 't2i_r10'):
        value = metrics[f'val/fuse/retrieval_{key}']
        assert 0.0 <= value <= 1.0, (key, value)
    assert metrics['val/fuse/retrieval_t2i_r10'] >= metrics['val/fuse/retrieval_t2i_r1']


def test_the_paper_config_takes_simlas_settings_and_the_checkpoint_sizes():
    from configs import finetune_nlvr2, simla_pretrain
    from tests.conftest import GOLDEN_BERT

    config = simla_pretrain.get_config('data_dir=/data,examples=51200')
    validate(config, num_devices=8)
    assert (config.batch_size, config.model.image_size, config.model.patch_size) == (512, 256, 16)
    assert config.total_steps == 30 * 100 and config.momentum.alpha_ramp_steps == 100
    assert config.momentum.queue_size == 65_536 and config.model.contrastive_dim == 256
    assert (config.optimizer.learning_rate, config.optimizer.decay) == (1e-4, 'cosine')
    assert config.model.vision_tower.num_layers == 12 and config.model.num_cross_layers == 12
    assert config.data.patch_mask.count == 75 and config.data.images == 'image_files'
    bert = simla_pretrain.get_config(f'data_dir=/data,bert={GOLDEN_BERT}')
    validate(bert, num_devices=8)
    assert bert.init_bert == str(GOLDEN_BERT)
    assert bert.model.num_layers == bert.model.num_cross_layers == 2  # the checkpoint's depth
    assert bert.data.tokenizer.kind == 'wordpiece'
    with pytest.raises(ValueError, match='examples'):
        simla_pretrain.get_config('data_dir=/data,examples=many')
    # A SIMLA run fine-tunes in the fuse mode, without the teacher.
    nlvr2 = finetune_nlvr2.get_config('mode=fuse')
    validate(nlvr2, num_devices=8)
    assert nlvr2.schedule == 'fuse' and 'momentum' not in nlvr2 and nlvr2.init_from


def test_the_retrieval_shortlist_reads_the_embeddings_of_the_ranking_mode():
    """A SIMLA model's shortlist is its own ITC (the caption through the stack, the image
    [CLS]), not the two-stream mode's bottom layers."""
    from semvlp_jax.tasks import retrieval

    class RecordingContext:
        def __init__(self):
            self.calls = []

        def predict(self, fn, params, mode, count, rows):
            self.calls.append((fn.__name__, mode))
            if fn is retrieval.predict_matching:
                return {'score': np.zeros(count, np.float32)}
            return {'embedding': np.eye(count, 4, dtype=np.float32)}

    class Gallery:
        images = {'pixels': np.zeros((3, 2, 2, 3), np.float32)}
        texts = {'text_ids': np.zeros((6, 4), np.int32)}
        text_image = np.array([0, 0, 1, 1, 2, 2])

        def pair_rows(self, pairs):
            return lambda indices: {}

    context = RecordingContext()
    retrieval.score_matrices(context, None, 'fuse', Gallery(), k=2)
    assert set(mode for _, mode in context.calls) == {'fuse'}, context.calls
    assert {name for name, _ in context.calls} == {
        'predict_text_embeddings',
        'predict_image_embeddings',
        'predict_matching',
    }


def test_without_queues_the_contrast_is_over_the_batch(simla_data, simla_batch):
    config = tiny_simla_config()
    config.momentum.queue_size = 0
    mesh = mesh_lib.make_mesh({'data': 1}, devices=jax.devices()[:1])
    model, state = train.create_model_and_state(config, simla_data.dims, mesh)
    assert state.queues is None and state.teacher is not None
    state, metrics = train.jit_train_step(config, model, mesh)(state, simla_batch, step_mode='fuse')
    assert state.queues is None
    # 8 rows, each its own image: the in-batch loss starts near log 8.
    assert abs(float(metrics['fuse/itc_momentum_loss']) - np.log(8)) < 0.5
