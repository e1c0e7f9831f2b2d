"""The demo config through the real command line, in a subprocess."""

import json

from tests.conftest import DEMO_RUN_STEPS, run_cli


def test_demo_runs_end_to_end_and_writes_metrics(demo_cli_run):
    workdir = demo_cli_run.workdir
    metrics = json.loads((workdir / 'metrics.json').read_text())
    for mode in ('single', 'two'):
        for metric in ('mlm_accuracy', 'itm_accuracy', 'qa_accuracy', 'loss'):
            value = metrics[f'val/{mode}/{metric}']
            assert 0.0 <= value < 100.0
    assert 'steps/s' in demo_cli_run.stderr and 'ETA' in demo_cli_run.stderr
    assert 'mlm_accuracy' in demo_cli_run.stdout  # the start/end table
    history = [
        json.loads(line) for line in (workdir / 'eval_history.jsonl').read_text().splitlines()
    ]
    assert [h['step'] for h in history] == [0, 40, 80, DEMO_RUN_STEPS]
    assert history[-1] == {'step': DEMO_RUN_STEPS, **metrics}
    assert list((workdir / 'tensorboard').glob('events.out.tfevents.*'))
    assert (workdir / 'tokenizer' / 'synthetic.model').exists()


def test_invalid_config_fails_fast_naming_the_key(tmp_path):
    result = run_cli(tmp_path, '--config.model.num_cross_layers=7')
    assert result.returncode != 0
    assert 'config.model.num_cross_layers=7' in result.stderr
    assert not (tmp_path / 'tokenizer').exists(), 'work started before the config was checked'
