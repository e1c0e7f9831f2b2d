"""Config validation that runs before any data is built or anything compiles.

Every error names the offending key, so `--config.model.num_cross_layers=9` fails with a sentence
about `config.model.num_cross_layers`, not with a shape error from inside jit.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math

import ml_collections

from semvlp_jax import objectives as objectives_lib
from semvlp_jax import schedule as schedule_lib
from semvlp_jax import tasks as tasks_lib
from semvlp_jax.data import datasets, synthetic
from semvlp_jax.data.concepts import ConceptConfig
from semvlp_jax.data.pixels import Augment
from semvlp_jax.data.tokenizers import TOKENIZER_KINDS
from semvlp_jax.errors import ConfigError
from semvlp_jax.models.concepts import HARD_NEGATIVES, ConceptSettings
from semvlp_jax.models.embeddings import REGION_NORMS, VISUAL_EMBEDDINGS
from semvlp_jax.models.encoder import MODES, REMAT_POLICIES
from semvlp_jax.models.layers import GELUS
from semvlp_jax.models.vision import TOWER_KEYS, TowerConfig
from semvlp_jax.objectives.simla import MOMENTUM_OBJECTIVES
from semvlp_jax.optimizer import modes_of
from semvlp_jax.parallel import mesh as mesh_lib
from semvlp_jax.parallel import sharding
from semvlp_jax.simla.queues import check_size
from semvlp_jax.simla.visual_tokenizer import VISUAL_TOKENIZERS
from semvlp_jax.weights import hf_bert, vit

__all__ = ['ConfigError', 'check_storage', 'validate']

# What a location on an object store needs, by scheme: epath's filesystem, and for a workdir
# also the client TensorBoard's writer uploads its event files with.
STORE_MODULES = {'gs://': ('gcsfs',)}
WORKDIR_STORE_MODULES = {'gs://': ('gcsfs', 'google.cloud.storage')}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package
        return False


def check_storage(path: str, what: str, *, workdir: bool = False) -> None:
    """ConfigError when `path` (named `what`, e.g. `--workdir`) is on an object store whose
    support is not installed; local paths always pass."""
    path = str(path)
    for scheme, modules in (WORKDIR_STORE_MODULES if workdir else STORE_MODULES).items():
        missing = [m for m in modules if not _installed(m)]
        if path.startswith(scheme) and missing:
            raise ConfigError(
                f'{what}={path!r} is on {scheme}, which needs {", ".join(missing)} (not '
                "installed): pip install -e '.[gcs]' (the [tpu] extra includes it)"
            )


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _value(config: ml_collections.ConfigDict, key: str):
    for part in key.split('.'):
        config = config[part]
    return config


def _check_at_least(config: ml_collections.ConfigDict, key: str, minimum: int = 1) -> None:
    value = _value(config, key)
    _check(value >= minimum, f'config.{key}={value} must be >= {minimum}')


def _check_one_of(config: ml_collections.ConfigDict, key: str, choices) -> None:
    value = _value(config, key)
    _check(value in choices, f'config.{key}={value!r}; expected one of {sorted(choices)}')


def validate(
    config: ml_collections.ConfigDict, *, num_devices: int, num_processes: int = 1
) -> schedule_lib.Schedule:
    """Raises ConfigError naming the key; returns the parsed mode schedule.

    The one place a config is checked: model constructors, the optimizer and the data builders
    trust what passes. (What only the data can tell, such as an answer count no answer reaches,
    is a ConfigError raised while the input is set up, before the first step.)"""
    for key in (
        'seed',
        'task',
        'total_steps',
        'batch_size',
        'microbatches',
        'schedule',
        'itm_negatives',
        'objectives',
        'eval_every',
        'eval_batches',
        'log_every',
        'checkpoint_every',
        'keep_checkpoints',
        'best_metric',
        'best_metric_goal',
        'init_from',
        'nonfinite',
        'model',
        'mesh',
        'parallel',
        'optimizer',
        'data',
    ):
        _check(key in config, f'config.{key} is missing')
    for key in (
        'total_steps',
        'eval_every',
        'log_every',
        'checkpoint_every',
        'keep_checkpoints',
        'nonfinite.max_in_a_row',
    ):
        _check_at_least(config, key)
    _check_one_of(config, 'best_metric_goal', ('max', 'min'))
    _check_one_of(config, 'nonfinite.policy', ('skip', 'stop'))
    _check(
        config.batch_size >= 2,
        f'config.batch_size={config.batch_size} must be >= 2 '
        '(ITM negatives come from other examples of the batch)',
    )
    try:
        shape = dict(zip(mesh_lib.MESH_AXES, mesh_lib.mesh_shape(config.mesh, num_devices)))
        sharding.rules_from_config(config.parallel)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    _check(
        config.batch_size % num_processes == 0,
        f'config.batch_size={config.batch_size} is not divisible by the {num_processes} processes',
    )
    batch_shards = math.prod(shape[axis] for axis in mesh_lib.BATCH_AXES)
    _check(
        config.batch_size % batch_shards == 0,
        f'config.batch_size={config.batch_size} is not divisible by the {batch_shards} batch '
        f'shards of the mesh (data x fsdp of {shape}, {num_devices} devices)',
    )
    _check(
        config.microbatches >= 1 and config.batch_size % (config.microbatches * batch_shards) == 0,
        f'config.microbatches={config.microbatches}: config.batch_size={config.batch_size} must '
        f'divide into microbatches that split over the {batch_shards} batch shards of the mesh',
    )

    model = config.model
    _check_at_least(config, 'model.num_layers')
    _check(
        1 <= model.num_cross_layers <= model.num_layers,
        f'config.model.num_cross_layers={model.num_cross_layers} must be in '
        f'1..config.model.num_layers ({model.num_layers})',
    )
    _check(
        model.hidden_size % model.num_heads == 0,
        f'config.model.hidden_size={model.hidden_size} is not divisible by '
        f'config.model.num_heads={model.num_heads}',
    )
    _check_one_of(config, 'model.visual_input', VISUAL_EMBEDDINGS)
    if model.visual_input == 'patches':
        _check_pixel_model(config)
    _check(
        config.model.get('answer_bias', 'zero') in ('zero', 'prior'),
        f'config.model.answer_bias={config.model.get("answer_bias")!r}; expected one of '
        "['prior', 'zero']",
    )
    _check(
        config.model.get('region_norm', 'average') in REGION_NORMS,
        f'config.model.region_norm={config.model.get("region_norm")!r}; expected one of '
        f'{list(REGION_NORMS)}',
    )
    _check(
        config.model.get('gelu', 'exact') in GELUS,
        f'config.model.gelu={config.model.get("gelu")!r}; expected one of {list(GELUS)}',
    )
    _check(
        config.model.get('layer_norm_eps', 1e-12) > 0,
        f'config.model.layer_norm_eps={config.model.get("layer_norm_eps")} must be > 0',
    )
    _check_one_of(config, 'model.remat', REMAT_POLICIES)
    _check_one_of(config, 'model.dtype', ('float32', 'bfloat16'))
    _check_one_of(config, 'optimizer.mu_dtype', ('float32', 'bfloat16'))
    _check(
        0.0 <= model.dropout_rate < 1.0,
        f'config.model.dropout_rate={model.dropout_rate} must be in [0, 1)',
    )

    try:
        schedule = schedule_lib.parse(
            config.schedule, p_two_stream=config.get('p_two_stream', 0.5), seed=config.seed
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None

    for mode, weights in config.objectives.items():
        _check(
            mode in MODES,
            f'config.objectives.{mode}: unknown mode {mode!r}; expected one of {MODES}',
        )
        for name, weight in weights.items():
            _check(
                name in objectives_lib.OBJECTIVES,
                f'config.objectives.{mode}.{name}: unknown objective {name!r}; registered: '
                f'{sorted(objectives_lib.OBJECTIVES)}',
            )
            _check(weight >= 0, f'config.objectives.{mode}.{name}={weight} must be >= 0')
    for step_mode in schedule.modes:
        for mode in modes_of(step_mode):
            _check(
                bool(config.objectives.get(mode)),
                f'config.schedule={config.schedule!r} runs mode {mode!r} but config.objectives.{mode} '
                'lists no objective',
            )

    _check_task(config)

    best = config.best_metric.split('/')
    _check(
        not config.best_metric
        or (len(best) == 3 and best[0] == 'val' and bool(config.objectives.get(best[1]))),
        f'config.best_metric={config.best_metric!r}; expected "" or "val/<mode>/<metric>" for a '
        f'mode with objectives ({sorted(m for m, o in config.objectives.items() if o)})',
    )

    _check(
        config.model.get('contrastive_dim', 0) >= 0,
        f'config.model.contrastive_dim={config.model.get("contrastive_dim")} must be >= 0',
    )
    uses_itc = [mode for mode, weights in config.objectives.items() if 'itc' in weights]
    _check(
        not uses_itc or config.model.get('contrastive_dim', 0) > 0,
        f'config.objectives.{(uses_itc or ["?"])[0]}.itc needs config.model.contrastive_dim > 0 '
        '(the size of the contrastive embeddings)',
    )
    _check_one_of(config, 'itm_negatives', ITM_NEGATIVES)
    _check(
        config.itm_negatives != 'hard' or config.model.get('contrastive_dim', 0) > 0,
        "config.itm_negatives='hard' samples negatives from contrastive similarities: it needs "
        'config.model.contrastive_dim > 0',
    )
    _check(
        isinstance(config.get('diagnostics', False), bool),
        f'config.diagnostics={config.get("diagnostics")!r} must be True or False',
    )
    _check_imported_weights(config)
    _check_momentum(config, schedule)
    _check_staged(config, schedule)
    _check_one_of(config, 'optimizer.decay', ('linear', 'cosine'))
    _check(
        config.optimizer.learning_rate > 0,
        f'config.optimizer.learning_rate={config.optimizer.learning_rate} must be > 0',
    )
    _check_one_of(config, 'data.name', DATA_NAMES)
    if config.data.name == 'tfds':
        _check_built_data(config.data, pixels=config.model.visual_input == 'patches')
    else:
        _check_synthetic_data(config.data)
    workers = config.data.get('input_workers', 0)
    _check(
        isinstance(workers, int) and not isinstance(workers, bool) and workers >= 0,
        f'config.data.input_workers={workers!r} must be an integer >= 0 (0: no worker '
        'processes, the batches are made in this one by config.data.reader_threads threads)',
    )
    return schedule


DATA_NAMES = ('synthetic', 'tfds')
# How ITM negatives are drawn (train_step.make_itm_pairs): uniformly, or from the contrastive
# similarities.
ITM_NEGATIVES = ('random', 'hard')
REGION_DATASETS = ('region_tsv', 'region_npz')
IMAGE_DATASETS = ('image_files',)


# Objectives that read detector regions; a model over pixels has none (masked *patch* modelling
# is SIMLA's, a separate objective).
REGION_OBJECTIVES = ('mop',)


def _check_pixel_model(config: ml_collections.ConfigDict) -> None:
    """`config.model.visual_input='patches'`: the patch grid, the vision tower and the
    objectives fit pixels."""
    model = config.model
    for key in ('image_size', 'patch_size'):
        _check(
            isinstance(model.get(key), int) and model.get(key) > 0,
            f'config.model.{key}={model.get(key)!r}: pixels need a positive int '
            "(config.model.visual_input='patches')",
        )
    _check(
        model.image_size % model.patch_size == 0,
        f'config.model.image_size={model.image_size} does not divide into patches of '
        f'config.model.patch_size={model.patch_size}',
    )
    tower = TowerConfig.from_config(model)
    unknown = sorted(set(model.get('vision_tower') or {}) - set(TOWER_KEYS))
    _check(
        not unknown,
        f'config.model.vision_tower has unknown keys {unknown}; expected some of {list(TOWER_KEYS)}',
    )
    _check(
        tower.num_layers >= 0,
        f'config.model.vision_tower.num_layers={tower.num_layers} must be >= 0 (0: no tower)',
    )
    if tower.num_layers:
        _check(
            tower.width % tower.num_heads == 0,
            f'config.model.vision_tower.width={tower.width} is not divisible by '
            f'config.model.vision_tower.num_heads={tower.num_heads}',
        )
        _check(
            tower.layer_norm_eps > 0,
            f'config.model.vision_tower.layer_norm_eps={tower.layer_norm_eps} must be > 0',
        )
    for mode, weights in config.objectives.items():
        for name in REGION_OBJECTIVES:
            _check(
                name not in weights,
                f'config.objectives.{mode}.{name}: {name!r} predicts masked detector regions, '
                "but config.model.visual_input='patches' reads pixels; remove it",
            )
    augment = Augment.from_config(config.data.get('augment'))
    for key, requirement in augment.problems() if augment else []:
        _check(False, f'config.data.augment.{key}={getattr(augment, key)!r} {requirement}')
    patch_mask = config.data.get('patch_mask') or {}
    count = patch_mask.get('count', 0)
    patches = (model.image_size // model.patch_size) ** 2
    _check(
        0 <= count < patches,
        f'config.data.patch_mask.count={count} must be in [0, {patches}) (the patch grid has '
        f'{patches} patches)',
    )
    if count:
        min_block = patch_mask.get('min_block', 16)
        _check(
            0 < min_block <= count,
            f'config.data.patch_mask.min_block={min_block} must be in [1, count={count}]',
        )
        min_aspect = patch_mask.get('min_aspect', 0.3)
        _check(
            0 < min_aspect <= 1,
            f'config.data.patch_mask.min_aspect={min_aspect} must be in (0, 1]',
        )


MOMENTUM_KEYS = ('decay', 'alpha', 'alpha_ramp_steps', 'queue_size')


def _check_only_in(config: ml_collections.ConfigDict, names, mode: str) -> None:
    """The objectives `names` read what only `mode` encodes: listed under another mode, they
    are refused."""
    for other, weights in config.objectives.items():
        misplaced = sorted(set(weights) & set(names)) if other != mode else []
        _check(
            not misplaced,
            f'config.objectives.{other}: {", ".join(misplaced)} run in the {mode} mode only '
            f'(config.objectives.{mode}, config.schedule={mode})',
        )


def _check_momentum(config: ml_collections.ConfigDict, schedule: schedule_lib.Schedule) -> None:
    """SIMLA's recipe: the momentum teacher and queues (`config.momentum`), the fuse mode, and
    what each of its objectives reads."""
    fuse = dict(config.objectives.get('fuse') or {})
    model = config.model
    head = dict(model.get('patch_head') or {})
    if head:
        name = head.get('tokenizer', 'random_projection')
        _check(
            name in VISUAL_TOKENIZERS,
            f'config.model.patch_head.tokenizer={name!r}; expected one of '
            f'{sorted(VISUAL_TOKENIZERS)}',
        )
        known = {'tokenizer', *(f.name for f in dataclasses.fields(VISUAL_TOKENIZERS[name]))}
        unknown = sorted(set(head) - known - {'patch_size', 'kind'})
        _check(
            not unknown and 'patch_size' not in head and 'kind' not in head,
            f'config.model.patch_head: unknown key(s) {unknown or ["patch_size/kind"]} for the '
            f'{name} tokenizer; known: {sorted(known - {"patch_size", "kind"})}',
        )
        _check(
            model.visual_input == 'patches',
            "config.model.patch_head predicts patches: it needs config.model.visual_input='patches'",
        )
        for key in ('codes', 'dim'):
            _check(
                head.get(key, 1) >= 1, f'config.model.patch_head.{key}={head.get(key)} must be >= 1'
            )
    _check(
        not model.get('concept_head', False) or model.get('contrastive_dim', 0) > 0,
        'config.model.concept_head reads the image contrastive feature: it needs '
        'config.model.contrastive_dim > 0',
    )
    distilling = sorted(set(fuse) & set(MOMENTUM_OBJECTIVES))
    _check_only_in(config, MOMENTUM_OBJECTIVES, 'fuse')
    momentum = config.get('momentum')
    _check(
        not distilling or bool(momentum),
        f'config.objectives.fuse.{distilling[0] if distilling else ""} needs the momentum '
        'teacher: set config.momentum (decay, alpha, alpha_ramp_steps, queue_size)',
    )
    if not momentum:
        return
    unknown = sorted(set(momentum) - set(MOMENTUM_KEYS))
    _check(not unknown, f'config.momentum: unknown key(s) {unknown}; known: {MOMENTUM_KEYS}')
    _check(
        set(schedule.modes) == {'fuse'},
        f'config.momentum: the teacher runs in the fuse mode, but config.schedule='
        f'{config.schedule!r} runs {schedule.modes}; use schedule=fuse or drop config.momentum',
    )
    decay, alpha = momentum.get('decay', 0.995), momentum.get('alpha', 0.4)
    _check(0.0 <= decay <= 1.0, f'config.momentum.decay={decay} must be in [0, 1]')
    _check(0.0 <= alpha <= 1.0, f'config.momentum.alpha={alpha} must be in [0, 1]')
    ramp = momentum.get('alpha_ramp_steps', 0)
    _check(ramp >= 0, f'config.momentum.alpha_ramp_steps={ramp} must be >= 0')
    size = momentum.get('queue_size', 0)
    if size:
        problem = check_size(size, config.batch_size, 'config.momentum.queue_size')
        _check(problem is None, problem or '')
        _check(
            'itc_momentum' in fuse,
            f"config.momentum.queue_size={size}: the queues hold itc_momentum's features, but "
            'config.objectives.fuse has no itc_momentum (set queue_size=0)',
        )
    _check(
        config.microbatches == 1,
        f'config.microbatches={config.microbatches} with config.momentum: the momentum '
        'contrastive loss contrasts each example with the whole global batch and the queues, '
        'and ITM samples its hard negatives from the whole batch, so gradient accumulation '
        'would need the features of every microbatch first; it is not implemented. Use '
        'microbatches=1 (a smaller batch_size, or more devices).',
    )
    contrastive = [n for n in ('itc_momentum', 'itm_hard', 'psl') if n in fuse]
    _check(
        not contrastive or model.get('contrastive_dim', 0) > 0,
        f'config.objectives.fuse.{(contrastive or [""])[0]} reads contrastive features: it needs '
        'config.model.contrastive_dim > 0',
    )
    _check(
        'psl' not in fuse or bool(model.get('concept_head', False)),
        'config.objectives.fuse.psl predicts keywords with the concept head: set '
        'config.model.concept_head=True',
    )
    if 'xmm_image' in fuse:
        _check(
            model.visual_input == 'patches' and bool(model.get('patch_head')),
            'config.objectives.fuse.xmm_image predicts masked patches: it needs '
            "config.model.visual_input='patches' and config.model.patch_head (its tokenizer)",
        )
        _check(
            (config.data.get('patch_mask') or {}).get('count', 0) > 0,
            'config.objectives.fuse.xmm_image needs masked patches: config.data.patch_mask.count '
            '> 0',
        )


# MVPTR's objectives read what only the staged mode encodes (tags, the uni-modal stages'
# [CLS], the joint stage's rows of pairs).
STAGED_OBJECTIVES = ('vsc', 'mcr', 'itm_hardest', 'wpg')


def _check_staged(config: ml_collections.ConfigDict, schedule: schedule_lib.Schedule) -> None:
    """MVPTR's recipe: the staged mode, its concepts, and what each of its objectives reads."""
    model = config.model
    modes = {mode for step_mode in schedule.modes for mode in modes_of(step_mode)}
    _check_only_in(config, STAGED_OBJECTIVES, 'staged')
    settings = dict(model.get('concepts') or {})
    unknown = sorted(set(settings) - set(ConceptSettings.keys()))
    _check(
        not unknown,
        f'config.model.concepts: unknown key(s) {unknown}; known: {list(ConceptSettings.keys())}',
    )
    concepts = ConceptSettings(**settings)
    _check(
        concepts.hard_negatives in HARD_NEGATIVES,
        f'config.model.concepts.hard_negatives={concepts.hard_negatives!r}; expected one of '
        f'{list(HARD_NEGATIVES)}',
    )
    joint = model.num_cross_layers
    _check(
        -joint <= concepts.grounding_layer < joint,
        f'config.model.concepts.grounding_layer={concepts.grounding_layer} must index one of the '
        f'{joint} joint layers (config.model.num_cross_layers): -{joint}..{joint - 1}',
    )
    _check(
        concepts.grounding_margin >= 0,
        f'config.model.concepts.grounding_margin={concepts.grounding_margin} must be >= 0',
    )
    _check(
        concepts.grounding_top_k >= 1,
        f'config.model.concepts.grounding_top_k={concepts.grounding_top_k} must be >= 1',
    )
    crossing = sorted(modes & {'two', 'fuse'})
    _check(
        model.get('cross_attention', True) or not crossing,
        f'config.model.cross_attention=False builds no cross-attention blocks, but '
        f'config.schedule={config.schedule!r} runs {crossing}, which read them',
    )
    _check(
        not model.get('separate_visual_layers', False) or modes == {'staged'},
        f'config.model.separate_visual_layers: only the staged mode reads the visual layers, but '
        f'config.schedule={config.schedule!r} runs {sorted(modes)}; use schedule=staged',
    )
    data_concepts = config.data.get('concepts')
    if data_concepts:
        concept_data = ConceptConfig.of(config.data)  # raises ConfigError naming the key
        _check(
            model.visual_input == 'regions',
            "config.data.concepts: MVPTR's tags are the class names of detector regions; "
            "they need config.model.visual_input='regions'",
        )
        _check(
            config.data.name == 'synthetic' or bool(concept_data.objects_vocab),
            'config.data.concepts.objects_vocab is not set: built region features name their '
            "objects by id; the tags need the detector's objects vocabulary file "
            '(objects_vocab.txt, one class per line)',
        )
    if 'staged' not in modes:
        return
    _check(
        bool(data_concepts),
        'config.schedule runs the staged mode, which reads object tags and phrase concepts: set '
        'config.data.concepts (max_tags, max_phrases, ...)',
    )
    _check(
        model.visual_input == 'regions',
        'the staged mode puts object tags ahead of detector regions: it needs '
        "config.model.visual_input='regions'",
    )
    _check(
        model.num_cross_layers < model.num_layers,
        f'the staged mode runs L-K uni-modal layers before K joint ones: config.model.'
        f'num_cross_layers={model.num_cross_layers} must be < config.model.num_layers '
        f'({model.num_layers})',
    )
    staged = dict(config.objectives.get('staged') or {})
    contrastive = [name for name in ('vsc', 'itm_hardest') if name in staged]
    _check(
        not contrastive or model.get('contrastive_dim', 0) > 0,
        f'config.objectives.staged.{(contrastive or [""])[0]} reads VSC features: it needs '
        'config.model.contrastive_dim > 0',
    )
    needs = {'wpg': 'max_phrases', 'mcr': 'max_mcr_predictions'}
    for name, key in needs.items():
        value = (data_concepts or {}).get(key, 1)
        _check(
            name not in staged or value > 0,
            f'config.objectives.staged.{name} needs config.data.concepts.{key} > 0 (it is {value})',
        )


def _check_imported_weights(config: ml_collections.ConfigDict) -> None:
    """`config.init_bert` (an HF BERT directory) and `config.init_vit` (a ViT checkpoint: HF
    directory, timm .safetensors, big_vision .npz): their sizes and numerics are the model's and
    their tensors map onto it, read from config.json and array headers only. Either, or both
    (text from BERT, the tower from ViT), start a run; `init_from` excludes them."""
    checks = {
        'init_bert': lambda path: _check_problems(
            hf_bert.BertConfig.read(path).mismatches(config.model, 'init_bert')
        ),
        'init_vit': lambda path: vit.check_vit(path, config.model, key='init_vit'),
    }
    for key, check in checks.items():
        path = config.get(key, '')
        if not path:
            continue
        _check(
            not config.init_from,
            f'config.{key}={path!r} and config.init_from={config.init_from!r} are both set; '
            f'a run starts from one of them (a fine-tune of a run initialised from {key} needs '
            'only init_from)',
        )
        check(path)


def _check_problems(problems: list[str]) -> None:
    _check(not problems, '; '.join(problems))


def _check_built_data(data: ml_collections.ConfigDict, *, pixels: bool) -> None:
    """Keys of `config.data` for datasets built by `python -m semvlp_jax.data.build`; a model
    that reads `pixels` takes its images from `data.images` (or caption records' own bytes)
    instead of the region dataset."""
    for key in ('data_dir', 'regions', 'tokenizer', 'num_regions', 'num_object_labels'):
        _check(key in data, f'config.data.{key} is missing (needed when config.data.name=tfds)')
    _check(bool(data.data_dir), 'config.data.data_dir is empty: the --data_dir of the builds')
    check_storage(data.data_dir, 'config.data.data_dir')
    images = data.get('images', '')
    _check(
        isinstance(images, str),
        f'config.data.images={images!r}: the name of a built image-file dataset, or empty',
    )
    if images:
        _check(
            images in IMAGE_DATASETS,
            f'config.data.images={images!r}; expected one of {list(IMAGE_DATASETS)} (or empty)',
        )
        _check(
            pixels,
            f'config.data.images={images!r} is set but config.model.visual_input='
            "'regions' reads region features (set visual_input='patches' to read pixels)",
        )
    if not pixels:
        _check(
            data.regions in REGION_DATASETS,
            f'config.data.regions={data.regions!r}; expected one of {list(REGION_DATASETS)}',
        )
    for key in ('num_regions', 'feature_dim', 'num_object_labels', 'num_attribute_labels'):
        _check(data[key] >= 1, f'config.data.{key}={data[key]} must be >= 1')
    _check(
        data.tokenizer.get('kind') in TOKENIZER_KINDS,
        f'config.data.tokenizer.kind={data.tokenizer.get("kind")!r}; '
        f'expected one of {list(TOKENIZER_KINDS)}',
    )
    _check(bool(data.tokenizer.get('path')), 'config.data.tokenizer.path is empty')
    for name, source in data.get('sources', {}).items():
        _check(
            name in datasets.PAIR_DATASETS,
            f'config.data.sources.{name}: not a dataset of image-text pairs; expected one of '
            f'{list(datasets.PAIR_DATASETS)}',
        )
        _check(bool(source.get('split')), f'config.data.sources.{name}.split is missing')
        _check(
            source.get('weight', 0) > 0,
            f'config.data.sources.{name}.weight={source.get("weight")} must be > 0',
        )


def _check_synthetic_data(data: ml_collections.ConfigDict) -> None:
    """The scene keys of `config.data`, by the synthetic dataset's own rules."""
    for key in ('num_train', 'num_val', 'vocab_size', 'max_text_len', 'reader_threads'):
        _check(data[key] >= 1, f'config.data.{key}={data[key]} must be >= 1')
    for field, requirement in synthetic.SyntheticConfig.unchecked(data).problems():
        _check(False, f'config.data.{field}={data[field]!r} {requirement}')


def _check_task(config: ml_collections.ConfigDict) -> None:
    """The task exists, its data can feed the configured objectives, and its own keys hold."""
    _check_one_of(config, 'task.name', tasks_lib.TASKS)
    task = tasks_lib.get(config.task.name)
    for mode, weights in config.objectives.items():
        for name in weights:
            _check(
                name in task.objectives,
                f'config.objectives.{mode}.{name}: task {task.name!r} has no data for {name!r}; '
                f'it feeds {sorted(task.objectives)}',
            )
    _check(
        task.itm_negatives or config.itm_negative_prob == 0,
        f'config.itm_negative_prob={config.itm_negative_prob} must be 0 for task {task.name!r}: '
        'an example whose image is swapped no longer has its answer or label',
    )
    budget = config.task.get('train_examples', 0)
    _check(
        isinstance(budget, int) and budget >= 0,
        f'config.task.train_examples={budget!r} must be an integer >= 0 (0: every example)',
    )
    _check(
        not budget or issubclass(task, tasks_lib.RecordTask),
        f'config.task.train_examples={budget}: task {task.name!r} has no labelled training set '
        'to take a budget of',
    )
    task.check(config)
