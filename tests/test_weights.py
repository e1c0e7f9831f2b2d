"""HF BERT import and export: parity with PyTorch's outputs (goldens written once by
tools/make_bert_golden.py), the name table's spellings and errors, the config checks, a
fine-tune started from BERT, and the export round trip."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from flax import nnx

from configs import finetune_vqa, pretrain_real
from semvlp_jax import config_checks
from semvlp_jax.checkpoint import flat_leaves
from semvlp_jax.data.dims import DataDims
from semvlp_jax.inference import TrainedRun
from semvlp_jax.models.semvlp import SemVLP
from semvlp_jax.weights import convert, hf_bert
from tests.conftest import GOLDEN_BERT, GOLDEN_BERT_OUTPUTS

PARITY = 1e-5


def test_imported_bert_computes_what_pytorch_computed():
    """Hidden states, pooled output and MLM logits of a padded batch with both token types."""
    model, report = convert.bert_text_model(GOLDEN_BERT)
    differences = convert.check_against(model, GOLDEN_BERT_OUTPUTS)
    assert set(differences) == {'last_hidden_state', 'pooler_output', 'prediction_logits'}
    assert max(differences.values()) < PARITY, differences
    # The next-sentence head has no counterpart; everything BERT has for us loaded.
    assert report.dropped == ['cls.seq_relationship.bias', 'cls.seq_relationship.weight']
    assert len(report.loaded) == 5 + 2 * 16 + 2 + 5  # embeddings, 2 layers, pooler, MLM head
    assert not any(k.startswith(('pooler/', 'mlm_head/', 'text_embeddings/')) for k in report.new)
    assert any(k.startswith('encoder/layers/1/cross_attention/') for k in report.new)


def test_a_wrong_mapping_shows_in_the_parity_check(tmp_path):
    """The check can fail: query and key of layer 0 swapped in the file give large differences."""
    tensors = safetensors.numpy.load_file(GOLDEN_BERT / hf_bert.WEIGHTS_FILE)
    prefix = 'bert.encoder.layer.0.attention.self.'
    for part in ('weight', 'bias'):
        q, k = prefix + f'query.{part}', prefix + f'key.{part}'
        tensors[q], tensors[k] = tensors[k], tensors[q]
    model, _ = convert.bert_text_model(_checkpoint_copy(tensors, tmp_path / 'swapped'))
    assert convert.check_against(model, GOLDEN_BERT_OUTPUTS)['last_hidden_state'] > 1e-2


def _checkpoint_copy(tensors, directory):
    """The golden checkpoint's config and vocabulary with `tensors` as its weights."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(GOLDEN_BERT / hf_bert.CONFIG_FILE, directory / hf_bert.CONFIG_FILE)
    shutil.copyfile(GOLDEN_BERT / hf_bert.VOCAB_FILE, directory / hf_bert.VOCAB_FILE)
    safetensors.numpy.save_file(dict(tensors), directory / hf_bert.WEIGHTS_FILE)
    return directory


def _golden_tensors():
    return safetensors.numpy.load_file(GOLDEN_BERT / hf_bert.WEIGHTS_FILE)


def _model_params(scan_layers=False):
    bert = hf_bert.BertConfig.read(GOLDEN_BERT)
    config = finetune_vqa.get_config(f'bert={GOLDEN_BERT}').model
    config.update(scan_layers=scan_layers)
    dims = DataDims(bert.vocab_size, 20, 8, 3, 0, 4)
    model = SemVLP(config, dims, rngs=nnx.Rngs(0))
    return config, nnx.to_pure_dict(nnx.state(model, nnx.Param)), model


def test_both_name_spellings_load_the_same_values(tmp_path):
    """`BertModel.save_pretrained` names (no `bert.` prefix) with old LayerNorm gamma/beta."""
    config, params, _ = _model_params()
    expected, _ = hf_bert.load_bert(GOLDEN_BERT, params, config)
    renamed = {}
    for name, value in _golden_tensors().items():
        name = name.removeprefix('bert.')
        if '.LayerNorm.' in name:
            name = name.replace('.weight', '.gamma').replace('.bias', '.beta')
        renamed[name] = value
    loaded, report = hf_bert.load_bert(_checkpoint_copy(renamed, tmp_path / 'b'), params, config)
    assert report.loaded and all(
        np.array_equal(flat_leaves(loaded)[k], flat_leaves(expected)[k]) for k in report.loaded
    )


def test_a_scanned_model_loads_the_same_layers():
    config, params, _ = _model_params()
    unrolled, _ = hf_bert.load_bert(GOLDEN_BERT, params, config)
    scanned_config, scanned_params, _ = _model_params(scan_layers=True)
    scanned, report = hf_bert.load_bert(GOLDEN_BERT, scanned_params, scanned_config)
    stacks = flat_leaves(scanned)
    key = 'encoder/stacks/0/feed_forward/expand/kernel'  # the bottom stack: layer 0 alone
    assert key in report.loaded
    np.testing.assert_array_equal(
        stacks[key][0], flat_leaves(unrolled)['encoder/layers/0/feed_forward/expand/kernel']
    )


@pytest.mark.parametrize(
    'change, message',
    [
        (
            lambda t: {k: v for k, v in t.items() if '.layer.1.' not in k},
            'missing encoder.layer.1.attention.self.query.weight',
        ),
        (
            lambda t: {
                **t,
                'bert.encoder.layer.0.attention.self.rotary.weight': t['cls.predictions.bias'],
            },
            'unexpected encoder.layer.0.attention.self.rotary.weight',
        ),
        (
            lambda t: {
                **t,
                'bert.encoder.layer.0.intermediate.dense.weight': t[
                    'bert.encoder.layer.0.intermediate.dense.weight'
                ].T.copy(),
            },
            r'encoder.layer.0.intermediate.dense.weight: shape \[32, 64\], expected \[64, 32\] .*transposed',
        ),
        (
            lambda t: {
                **t,
                'cls.predictions.decoder.weight': t['bert.embeddings.word_embeddings.weight'] + 1,
            },
            'cls.predictions.decoder.weight differs from embeddings.word_embeddings.weight',
        ),
        (
            lambda t: {k: v for k, v in t.items() if k != 'cls.predictions.transform.dense.bias'},
            'missing cls.predictions.transform.dense.bias',  # a part present is present whole
        ),
    ],
    ids=['missing_layer', 'extra_tensor', 'transposed', 'untied_decoder', 'partial_head'],
)
def test_tensors_that_do_not_map_are_listed(change, message, tmp_path):
    config, params, _ = _model_params()
    directory = _checkpoint_copy(change(_golden_tensors()), tmp_path / 'bad')
    with pytest.raises(hf_bert.WeightsError, match=message):
        hf_bert.load_bert(directory, params, config)


def test_a_file_without_the_mlm_head_leaves_it_new(tmp_path):
    config, params, _ = _model_params()
    tensors = {k: v for k, v in _golden_tensors().items() if not k.startswith('cls.')}
    _, report = hf_bert.load_bert(_checkpoint_copy(tensors, tmp_path / 'b'), params, config)
    assert 'mlm_head/transform/dense/kernel' in report.new
    assert 'pooler/dense/kernel' in report.loaded


def test_config_checks_refuse_a_model_that_is_not_the_checkpoints():
    config = finetune_vqa.get_config(f'bert={GOLDEN_BERT}')
    config.model.num_layers = 3
    config.model.layer_norm_eps = 1e-6
    with pytest.raises(config_checks.ConfigError) as error:
        config_checks.validate(config, num_devices=1)
    assert 'config.model.num_layers=3 but config.init_bert has num_hidden_layers=2' in str(
        error.value
    )
    assert 'config.model.layer_norm_eps=1e-06 but config.init_bert has layer_norm_eps=1e-12' in (
        str(error.value)
    )
    both = finetune_vqa.get_config(f'bert={GOLDEN_BERT},init=/tmp/run')
    with pytest.raises(config_checks.ConfigError, match='both set'):
        config_checks.validate(both, num_devices=1)
    with pytest.raises(FileNotFoundError, match='no config.json'):
        hf_bert.BertConfig.read(GOLDEN_BERT.parent)


def test_real_data_config_takes_the_checkpoints_sizes_and_vocabulary():
    config = pretrain_real.get_config(f'data_dir=/data,bert={GOLDEN_BERT}')
    assert config.init_bert == str(GOLDEN_BERT)
    assert (config.model.num_layers, config.model.hidden_size, config.model.mlp_size) == (2, 32, 64)
    assert config.data.tokenizer.to_dict() == {
        'kind': 'wordpiece',
        'path': f'{GOLDEN_BERT}/vocab.txt',
    }


def test_a_fine_tune_from_bert_starts_from_the_imported_text_states(bert_vqa_run):
    """The trainer's checkpoint after a zero-learning-rate step computes BERT's outputs."""
    log = (bert_vqa_run / 'log.txt').read_text()
    assert f'initialised from BERT {GOLDEN_BERT}' in log and 'new (initialised)' in log
    assert 'dropped 2: [cls.seq_relationship.bias, cls.seq_relationship.weight]' in log
    # The tokenizer is the checkpoint's vocab.txt, kept in the run.
    assert (bert_vqa_run / 'tokenizer/vocab.txt').read_bytes() == (
        GOLDEN_BERT / 'vocab.txt'
    ).read_bytes()
    run = TrainedRun.load(bert_vqa_run)
    model = nnx.merge(run.graphdef, run.params)
    reference = np.load(GOLDEN_BERT_OUTPUTS)
    hidden, pooled = model.encode_text(
        reference['input_ids'], reference['attention_mask'], reference['token_type_ids']
    )
    np.testing.assert_allclose(hidden, reference['last_hidden_state'], atol=PARITY, rtol=0)
    np.testing.assert_allclose(pooled, reference['pooler_output'], atol=PARITY, rtol=0)


def test_export_then_import_gives_the_parameters_back_exactly(bert_vqa_run, tmp_path, capsys):
    out = tmp_path / 'exported'
    assert (
        convert.main(['--to', 'hf_bert', '--workdir', str(bert_vqa_run), '--output', str(out)]) == 0
    )
    assert 'wrote the text side' in capsys.readouterr().out
    written = json.loads((out / 'config.json').read_text())
    assert written['num_hidden_layers'] == 2 and written['max_position_embeddings'] == 20
    assert (out / 'vocab.txt').read_bytes() == (GOLDEN_BERT / 'vocab.txt').read_bytes()
    run = TrainedRun.load(bert_vqa_run)
    fresh = jax.tree.map(jnp.zeros_like, run.params)
    loaded, report = hf_bert.load_bert(out, fresh, run.config.model)
    assert report.dropped == [] and len(report.loaded) == 44
    original, back = flat_leaves(run.params), flat_leaves(loaded)
    for key in report.loaded:
        np.testing.assert_array_equal(back[key], original[key], err_msg=key)
