"""`semvlp_jax.plots`: curves from the histories, text->region attention on the scenes, the
command line, and the TensorBoard figures of `config.eval_figures`.

Curves are checked on history files written here; the attention on the session's tiny
pre-training run (`pretrained_run`, one worker).
"""

import functools
import pathlib
import shutil
import struct
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from semvlp_jax import plots
from semvlp_jax.data import pipeline
from semvlp_jax.inference import TrainedRun
from semvlp_jax.parallel import mesh as mesh_lib
from semvlp_jax.parallel import sharding
from semvlp_jax.plots import curves
from semvlp_jax.plots.__main__ import main
from semvlp_jax.plots.eval_figures import EvalFigures
from semvlp_jax.progress import RunLog
from semvlp_jax.tasks.base import EvalContext, take

ROOT = pathlib.Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------- curves

# What a fine-tune and a pre-training run log, mixed: metrics of both modes and of one only, a
# window in which one mode did not run, and keys of no mode (learning rate, gradient norms).
TRAIN = [
    {'single/loss': 3.0, 'two/loss': 3.5, 'single/mlm_accuracy': 0.1, 'two/mlm_accuracy': 0.2},
    {'two/loss': 2.5, 'two/mlm_accuracy': 0.3},
    {'single/loss': 2.0, 'two/loss': 1.5, 'single/mlm_accuracy': 0.4, 'two/mlm_accuracy': 0.5},
]
TRAIN_STEPS = (10, 20, 30)
NO_MODE = {'learning_rate': 1e-3, 'grad_norm': 2.0, 'grad_norm/encoder/self_attention': 1.0}
EVAL = {
    0: {'val/single/loss': 4.0, 'val/two/loss': 4.2, 'val/two/vqa_accuracy': 0.25},
    30: {'val/single/loss': 2.2, 'val/two/loss': 1.9, 'val/two/vqa_accuracy': 0.75},
}


@pytest.fixture
def history_run(tmp_path):
    """A workdir with histories written as the trainer writes them (`RunLog`)."""
    log = RunLog(tmp_path)
    log.evaluation(0, EVAL[0])
    for step, metrics in zip(TRAIN_STEPS, TRAIN):
        log.train(step, {**metrics, **NO_MODE})
    log.evaluation(30, EVAL[30])
    log.close()
    return tmp_path


def expected_series() -> dict:
    """The curves, read off the tables above by hand."""
    points: dict = {}
    for step, metrics in zip(TRAIN_STEPS, TRAIN):
        for key, value in metrics.items():
            mode, metric = key.split('/')
            points.setdefault(metric, {}).setdefault(('train', mode), []).append((step, value))
    for step, metrics in EVAL.items():
        for key, value in metrics.items():
            _, mode, metric = key.split('/')
            points.setdefault(metric, {}).setdefault(('val', mode), []).append((step, value))
    return points


def assert_picture(path, size: tuple[int, int]) -> None:
    """A PNG of `size` (width, height) that is not blank."""
    image = Image.open(path)
    assert image.format == 'PNG' and image.size == size
    pixels = np.asarray(image.convert('RGB'), np.float64)
    assert pixels.std() > 10
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20


def test_curve_series_are_the_histories_values(history_run):
    series = plots.curve_series(plots.run_history(history_run))
    expected = expected_series()
    assert list(series) == sorted(expected) == ['loss', 'mlm_accuracy', 'vqa_accuracy']
    for metric, lines in expected.items():
        assert list(series[metric]) == sorted(lines, key=curves._line_order)
        for line, points in lines.items():
            steps, values = series[metric][line]
            np.testing.assert_array_equal(steps, [s for s, _ in points])
            np.testing.assert_allclose(values, [v for _, v in points])
    # The window without a single-stream step is not a point of its curve.
    np.testing.assert_array_equal(series['loss']['train', 'single'][0], [10, 30])


def test_the_figures_lines_are_the_series(history_run):
    series = plots.curve_series(plots.run_history(history_run))
    for metric, lines in series.items():
        figure = plots.metric_figure(metric, lines)
        (ax,) = figure.axes
        assert ax.get_title() == metric
        drawn = {line.get_label(): line for line in ax.get_lines()}
        assert sorted(drawn) == sorted(curves.line_label(line) for line in lines)
        for line, (steps, values) in lines.items():
            np.testing.assert_array_equal(drawn[curves.line_label(line)].get_xdata(), steps)
            np.testing.assert_array_equal(drawn[curves.line_label(line)].get_ydata(), values)
    overview = plots.overview_figure(series, ['vqa_accuracy', 'loss', 'absent'])
    assert [ax.get_title() for ax in overview.axes] == ['vqa_accuracy', 'loss']


def test_one_png_per_metric(history_run, tmp_path):
    paths = plots.write_curves(history_run)
    assert sorted(p.name for p in paths) == [
        'curves_loss.png',
        'curves_mlm_accuracy.png',
        'curves_vqa_accuracy.png',
    ]
    for path in paths:
        assert pathlib.Path(path).parent == history_run / 'plots'
        assert_picture(path, (640, 400))
    (only,) = plots.write_curves(history_run, tmp_path / 'out', ['loss'])
    assert pathlib.Path(only) == tmp_path / 'out/curves_loss.png'
    with pytest.raises(ValueError, match='no history of metric.*nope.*the run has loss'):
        plots.write_curves(history_run, metrics=['nope'])


def test_curves_command(history_run, tmp_path, capsys):
    out = tmp_path / 'pictures'
    result = subprocess.run(
        [sys.executable, '-m', 'semvlp_jax.plots', 'curves', '--workdir', str(history_run)]
        + ['--out', str(out), '--metrics', 'loss,vqa_accuracy'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == [
        str(out / 'curves_loss.png'),
        str(out / 'curves_vqa_accuracy.png'),
    ]
    assert_picture(out / 'curves_vqa_accuracy.png', (640, 400))
    assert main(['curves', '--workdir', str(tmp_path / 'empty')]) == 2
    assert 'no train_history.jsonl or eval_history.jsonl' in capsys.readouterr().err


# ---------------------------------------------------------------- attention


@pytest.fixture(scope='module')
def run(pretrained_run):
    return TrainedRun.load(pretrained_run)


def test_validation_example_is_the_evaluators(run, pretrained_run):
    config = run.config
    data = pipeline.synthetic_pretraining(
        config.data, pretrained_run, batch_size=config.batch_size, seed=config.seed
    )
    for index in (0, 5, config.data.num_val - 1):
        example = plots.validation_example(config, run.tokenizer, index)
        batch, row = divmod(index, config.batch_size)
        evaluated = {key: value[row] for key, value in data.val[batch].items()}
        assert sorted(example.evaluated) == sorted(evaluated)
        for key, value in evaluated.items():
            np.testing.assert_array_equal(example.evaluated[key], value, err_msg=key)
        # The model reads the same text and regions, without the evaluation's masks.
        inputs = example.inputs
        masked_words = evaluated['mlm_positions'][evaluated['mlm_weights'] > 0]
        words = np.setdiff1d(np.arange(config.data.max_text_len), masked_words)
        np.testing.assert_array_equal(inputs['text_ids'][words], evaluated['text_ids'][words])
        np.testing.assert_array_equal(inputs['text_mask'], evaluated['text_mask'])
        assert bool(evaluated['is_question']) == example.is_question
        assert run.tokenizer.decode(inputs['text_ids']) == example.text
        masked_regions = evaluated['mop_positions'][evaluated['mop_weights'] > 0]
        regions = np.setdiff1d(np.arange(config.data.num_regions), masked_regions)
        np.testing.assert_array_equal(
            inputs['region_features'][regions], evaluated['region_features'][regions]
        )
        for key in ('region_boxes', 'region_mask'):
            np.testing.assert_array_equal(inputs[key], evaluated[key])
        assert len(example.region_names) == example.num_regions >= 2
        assert example.pixels.shape == (256, 256, 3) and example.pixels.dtype == np.uint8
        assert len(np.unique(example.pixels.reshape(-1, 3), axis=0)) >= 2  # shapes drawn


@functools.partial(jax.jit, static_argnames=('graphdef', 'mode'))
def reference_probs(params, batch, graphdef, mode):
    """The last layer's attention of the text queries, recomputed from the states the model's
    own forward pass (`SemVLP.__call__`) feeds that layer, through `Attention.inspect`: the
    joint self-attention's text rows (all keys, image first) or the text->image
    cross-attention's."""
    model = nnx.merge(graphdef, params)
    encoded = model(batch, mode=mode)
    last = len(encoded.text_layers) - 1
    layer = model.encoder.layer(last)
    text, image = encoded.text_layers[last - 1], encoded.image_layers[last - 1]
    text_mask, region_mask = batch['text_mask'], batch['region_mask']
    if mode == 'single':
        x = jnp.concatenate([image, text], axis=1)
        probs, _ = layer.self_attention.inspect(x, x, jnp.concatenate([region_mask, text_mask], 1))
        return probs[0, :, image.shape[1] :]
    text = layer.self_attention(text, text, text_mask, None)
    image = layer.self_attention(image, image, region_mask, None)
    return layer.cross_attention.text_to_image.inspect(text, image, region_mask)[0][0]


def test_region_weights_are_the_mean_of_renormalised_rows(run):
    attention = plots.run_attention(run, 3)
    example = attention.example
    batch = {key: value[None] for key, value in example.inputs.items()}
    real = example.inputs['region_mask'].astype(bool)
    text_mask = example.inputs['text_mask'].astype(bool)
    queries = [q for q in range(len(text_mask)) if attention.queries[q]]
    assert attention.queries.sum() == text_mask.sum() - 2  # every word: not [CLS], not [SEP]
    assert attention.query_tokens == [example.tokens[q] for q in queries]
    assert attention.layer == run.config.model.num_layers - 1
    assert list(attention.weights) == ['single', 'two']
    for mode, probs in attention.probs.items():
        reference = np.asarray(reference_probs(run.params, batch, run.graphdef, mode))
        num_regions = len(real)
        np.testing.assert_allclose(probs, reference[..., :num_regions], atol=1e-5)
        on_image = probs[:, text_mask][..., real].sum(-1)
        if mode == 'single':  # the rest of each row is on the text keys
            assert (on_image < 1 - 1e-3).all()
            np.testing.assert_allclose(reference[:, text_mask].sum(-1), 1, atol=1e-5)
        else:
            np.testing.assert_allclose(on_image, 1, atol=1e-5)
        # By hand: each (head, query) row over the real regions, renormalised, then averaged.
        hand = np.zeros(len(real))
        for head in range(probs.shape[0]):
            for q in queries:
                row = np.where(real, probs[head, q], 0.0)
                hand += row / row.sum()
        hand /= probs.shape[0] * len(queries)
        weights = attention.weights[mode]
        np.testing.assert_allclose(weights, hand, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(weights[real].sum(), 1.0, atol=1e-9)
        assert (weights[~real] == 0).all() and (weights[real] > 0).all()


def test_tokens_choose_the_queries(run):
    everything = plots.run_attention(run, 3)
    tokens = everything.example.tokens
    word = next(t for t in tokens if t not in ('', '[CLS]', '[SEP]'))
    chosen = plots.run_attention(run, 3, words=[word.upper()])
    positions = [i for i, token in enumerate(tokens) if token == word]
    assert np.flatnonzero(chosen.queries).tolist() == positions
    probs = chosen.probs['two']
    expected = np.mean(
        [probs[h, q] / probs[h, q].sum() for h in range(len(probs)) for q in positions], 0
    )
    np.testing.assert_allclose(chosen.weights['two'], expected, atol=1e-9)
    with pytest.raises(ValueError, match=r'none of the tokens nope is in the text.*its tokens: '):
        plots.query_mask(everything.example, ['nope'])
    with pytest.raises(ValueError, match='out of range'):
        plots.validation_example(run.config, run.tokenizer, run.config.data.num_val)


def test_attention_command(pretrained_run, tmp_path, capsys):
    argv = ['attention', '--workdir', str(pretrained_run), '--out', str(tmp_path)]
    assert main([*argv, '--example', '3']) == 0
    path = tmp_path / 'attention_val3.png'
    assert capsys.readouterr().out.split() == [str(path)]
    assert_picture(path, (840, 500))  # a panel per mode
    assert main([*argv, '--example', '2', '--modes', 'two']) == 0
    assert_picture(tmp_path / 'attention_val2.png', (420, 500))
    capsys.readouterr()
    assert main([*argv, '--example', '999']) == 2
    assert 'out of range' in capsys.readouterr().err
    assert main([*argv, '--example', '3', '--tokens', 'nope']) == 2
    assert 'none of the tokens nope' in capsys.readouterr().err
    assert main([*argv, '--example', '3', '--modes', 'three']) == 2
    assert 'unknown mode(s) three' in capsys.readouterr().err


# ---------------------------------------------------------------- TensorBoard


def tensorboard_images(directory) -> dict[str, list[tuple[int, int, int]]]:
    """{tag: [(step, height, width)]} of the image summaries of a TensorBoard event directory
    (TFRecord framing: length, its CRC, an Event proto, its CRC)."""
    from tensorboardX.proto import event_pb2

    found: dict[str, list[tuple[int, int, int]]] = {}
    for path in sorted(pathlib.Path(directory).glob('events.out.tfevents.*')):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack('<Q', data[offset : offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                if value.HasField('image'):
                    found.setdefault(value.tag, []).append(
                        (event.step, value.image.height, value.image.width)
                    )
    return found


def test_eval_figures_write_tensorboard_images(run, pretrained_run, tmp_path):
    """The trainer's hook on the trainer's mesh (eight devices here): the attention through
    `EvalContext.predict` is the single-device one, and only the writer writes."""
    config = run.config
    mesh = mesh_lib.make_mesh(config.mesh)
    batch_sharding = sharding.batch_sharding(mesh)

    def to_global(rows):
        return jax.tree.map(
            lambda x: jax.make_array_from_process_local_data(batch_sharding, x), rows
        )

    params = jax.device_put(run.params, jax.NamedSharding(mesh, jax.P()))
    context = EvalContext(config, run.graphdef, mesh, to_global, True)
    workdir = tmp_path / 'run'
    workdir.mkdir()
    for name in ('train_history.jsonl', 'eval_history.jsonl'):
        shutil.copy(pretrained_run / name, workdir / name)
    figures = EvalFigures(config, workdir, run.tokenizer, context)
    log = RunLog(workdir, resume_step=run.step)
    figures.write(log, run.step, params)
    log.close()
    written = tensorboard_images(workdir / 'tensorboard')
    assert sorted(written) == ['figures/attention', 'figures/curves']
    for tag, images in written.items():
        ((step, height, width),) = images
        assert step == run.step and height > 200 and width > 300, tag
    # The sharded evaluation reads the same attention as one device.
    expected = plots.run_attention(run, 0)
    rows = {key: value[None] for key, value in figures.example.inputs.items()}
    for mode in ('single', 'two'):
        read = context.predict(plots.text_to_region_attention, params, mode, 1, take(rows))
        np.testing.assert_allclose(read['probs'][0], expected.probs[mode], atol=1e-5)
    # A process that does not write computes the attention and writes nothing.
    quiet = tmp_path / 'quiet'
    figures.write(RunLog(quiet, enabled=False), run.step, params)
    assert not quiet.exists()
