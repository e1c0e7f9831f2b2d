"""The notebooks in notebooks/: each `.ipynb` is its jupytext `.py` pair, and all three run
end to end (nbclient, a python3 kernel) on their tiny settings (SEMVLP_NOTEBOOK_TINY=1).

Notebook 1 pre-trains into the shared notebook workdir; notebooks 2 and 3 then reuse that run,
as they do on Colab after notebook 1, so the three tests stay on one worker (`xdist_group`).
"""

import base64
import io
import math
import os
import pathlib
import re
import sys
import time

import jupytext
import nbformat
import numpy as np
import pytest
from PIL import Image

from tests.test_plots import tensorboard_images

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / 'notebooks'
NAMES = ('01_pretrain_demo', '02_finetune_vqa', '03_attention')
KERNEL = 'python3'
# On a CPU, compiling the tiny programs is most of a notebook's time; XLA's backend
# optimisations only lengthen it (the tiny model runs fast either way).
KERNEL_XLA_FLAGS = '--xla_backend_optimization_level=0'
CELL_TIMEOUT_S = 600

in_one_worker = pytest.mark.xdist_group('notebooks')


def cells(notebook) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]


@pytest.mark.parametrize('name', NAMES)
def test_each_ipynb_is_its_py(name):
    paired = jupytext.read(NOTEBOOKS / f'{name}.py')
    stored = jupytext.read(NOTEBOOKS / f'{name}.ipynb')
    assert cells(stored) == cells(paired), f'run: jupytext --to ipynb notebooks/{name}.py'
    assert stored.metadata['kernelspec']['name'] == KERNEL
    first_code = next(cell.source for cell in stored.cells if cell.cell_type == 'code')
    assert "if 'google.colab' in sys.modules:" in first_code
    assert 'git+https://github.com/semvlp-jax/semvlp_jax' in first_code


@pytest.fixture(scope='module')
def kernel_name(tmp_path_factory):
    """python3, installed for these tests into a temporary prefix if no kernelspec has it."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(KERNEL)
        yield KERNEL
        return
    except NoSuchKernel:
        pass
    from ipykernel import kernelspec

    prefix = tmp_path_factory.mktemp('kernels')
    kernelspec.install(kernel_name=KERNEL, prefix=str(prefix))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv('JUPYTER_PATH', str(prefix / 'share' / 'jupyter'))
        yield KERNEL


@pytest.fixture(scope='module')
def notebook_root(tmp_path_factory):
    return tmp_path_factory.mktemp('notebooks')


def kernel_env(root: pathlib.Path) -> dict[str, str]:
    """The environment of a notebook's kernel: tiny settings, the shared workdir, this
    checkout first on the path, one CPU device as on Colab (not the tests' eight)."""
    env = dict(os.environ)
    env.update(
        SEMVLP_NOTEBOOK_TINY='1',
        SEMVLP_NOTEBOOK_WORKDIR=str(root),
        PYTHONPATH=os.pathsep.join(filter(None, (str(ROOT), env.get('PYTHONPATH')))),
        XLA_FLAGS=KERNEL_XLA_FLAGS,
        MPLBACKEND='Agg',
    )
    env.pop('SEMVLP_NOTEBOOK_PRETRAINED', None)
    return env


def execute(name: str, kernel: str, root: pathlib.Path):
    """The notebook run top to bottom; (the executed notebook, seconds taken)."""
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOKS / f'{name}.ipynb', as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name=kernel,
        timeout=CELL_TIMEOUT_S,
        resources={'metadata': {'path': str(ROOT)}},
    )
    start = time.perf_counter()
    client.execute(env=kernel_env(root))
    seconds = time.perf_counter() - start
    print(f'{name}: {seconds:.1f} s', file=sys.stderr)
    return notebook, seconds


def text_of(notebook) -> str:
    parts = []
    for cell in notebook.cells:
        for output in cell.get('outputs', []):
            if output.output_type == 'stream' and output.name == 'stdout':
                parts.append(output.text)
            elif output.output_type == 'execute_result' and 'text/plain' in output.data:
                parts.append(output.data['text/plain'] + '\n')
    return ''.join(parts)


def images_of(notebook) -> list[np.ndarray]:
    """Every PNG the notebook displayed, as an RGB array."""
    return [
        np.asarray(
            Image.open(io.BytesIO(base64.b64decode(output.data['image/png']))).convert('RGB')
        )
        for cell in notebook.cells
        for output in cell.get('outputs', [])
        if 'data' in output and 'image/png' in output.data
    ]


def assert_pictures(images: list[np.ndarray], count: int) -> None:
    assert len(images) >= count
    for image in images:
        assert image.shape[0] > 100 and image.shape[1] > 100
        assert image.std() > 5 and len(np.unique(image.reshape(-1, 3), axis=0)) > 10


@pytest.fixture(scope='module')
def pretrain_notebook(kernel_name, notebook_root):
    return execute('01_pretrain_demo', kernel_name, notebook_root)


@in_one_worker
def test_pretrain_notebook(pretrain_notebook, notebook_root):
    notebook, _ = pretrain_notebook
    text = text_of(notebook)
    for mode in ('single', 'two'):
        for metric in ('loss', 'itm_accuracy', 'mlm_accuracy'):
            found = re.search(rf'^val/{mode}/{metric} (\S+)$', text, re.MULTILINE)
            assert found, text[-2000:]
            assert math.isfinite(float(found.group(1)))
    assert 'curves_loss.png' in text and 'curves_itm_accuracy.png' in text
    assert (notebook_root / 'pretrain/plots/curves_loss.png').is_file()
    assert_pictures(images_of(notebook), 2)
    # config.eval_figures: both figures at each evaluation (step 0 and the end, step 30).
    written = tensorboard_images(notebook_root / 'pretrain/tensorboard')
    for tag in ('figures/curves', 'figures/attention'):
        assert [step for step, _, _ in written[tag]] == [0, 30]
        assert all(height > 200 and width > 300 for _, height, width in written[tag])


@in_one_worker
def test_finetune_vqa_notebook(pretrain_notebook, kernel_name, notebook_root):
    notebook, _ = execute('02_finetune_vqa', kernel_name, notebook_root)
    text = text_of(notebook)
    assert 'reusing the pre-training run' in text
    found = re.search(r'^val/two/vqa_accuracy (\S+)$', text, re.MULTILINE)
    assert found and 0 <= float(found.group(1)) <= 1, text[-2000:]
    answered = re.findall(r'^Q: .+  truth: \S+  top: (.+)$', text, re.MULTILINE)
    assert len(answered) == 6
    for top in answered:
        scores = [float(part.rsplit(' ', 1)[1]) for part in top.split(', ')]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True)
        assert all(0 < s < 1 for s in scores)
    assert_pictures(images_of(notebook), 1)


@in_one_worker
def test_attention_notebook(pretrain_notebook, kernel_name, notebook_root):
    notebook, _ = execute('03_attention', kernel_name, notebook_root)
    text = text_of(notebook)
    assert 'reusing the pre-training run' in text
    sums = re.findall(r'^(single|two): weights sum to (\S+)$', text, re.MULTILINE)
    assert sorted(mode for mode, _ in sums) == ['single', 'two']
    assert all(abs(float(total) - 1) < 1e-3 for _, total in sums)
    assert re.search(r"^words: \['\w+'", text, re.MULTILINE)
    assert_pictures(images_of(notebook), 2)
