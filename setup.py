"""semvlp_jax: SemVLP-style vision-language pre-training in JAX/Flax, TPU first."""

import setuptools

# Ranges tested together (Python 3.11, CPU): see README "Set-up".
INSTALL_REQUIRES = [
    'jax>=0.10.2,<0.11',
    'flax>=0.12.8,<0.13',
    'optax>=0.2.8,<0.3',
    'orbax-checkpoint>=0.12.8,<0.13',
    'ml-collections>=1.1,<2',
    'sentencepiece>=0.2.3,<0.3',
    'tokenizers>=0.22.1,<0.24',
    'grain>=0.2.18,<0.3',
    'tensorflow-datasets>=4.9.10,<5',
    'numpy>=2.2,<3',
    'pillow>=11,<14',
    'tensorboardX>=2.6.2,<3',
    'absl-py>=2.1,<3',
    'safetensors>=0.8,<0.9',
    # Every workdir and data path goes through epath, so gs:// works like a local directory.
    'etils[epath]>=1.15,<2',
    'matplotlib>=3.11,<3.12',
    'tqdm>=4.66,<5',  # the console's live bar (progress.py)
]

setuptools.setup(
    name='semvlp_jax',
    version='0.1.0',
    description='SemVLP-style vision-language pre-training in JAX/Flax',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=setuptools.find_packages(include=['semvlp_jax', 'semvlp_jax.*', 'configs']),
    python_requires='>=3.11',
    install_requires=INSTALL_REQUIRES,
    extras_require={
        'test': [
            'pytest>=8.3,<10',
            'pytest-xdist>=3.8,<4',
            'ruff>=0.17.6,<0.18',
            # The notebooks are executed in the tests and checked against their .py pairs.
            'nbclient>=0.11,<0.12',
            'nbformat>=5.11,<6',
            'ipykernel>=7.4,<8',
            'jupytext>=1.19,<2',
        ],
        # gs:// workdirs and data: epath through gcsfs, TensorBoard's uploads through the GCS
        # client. The TPU extra includes them.
        'gcs': ['etils[epath-gcs]>=1.15,<2', 'google-cloud-storage>=3.17,<4'],
        'tpu': [
            'jax[tpu]>=0.10.2,<0.11',
            'etils[epath-gcs]>=1.15,<2',
            'google-cloud-storage>=3.17,<4',
        ],
    },
)
