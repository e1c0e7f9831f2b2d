"""A small region-feature world written in the real file formats, unlike the synthetic scenes.

Each image holds 2-4 objects of distinct classes out of `CLASSES`; every object is seen by a
few detector boxes around its place, and the remaining boxes are background clutter. A box's
2048-d feature is a ReLU of its class code (a fixed random vector per class) plus noise, like
bottom-up-attention features (non-negative, dense), so what a feature says about its class
has to be learnt from the captions, which name some of the objects ("a dog next to a cup").
Nothing here shares the synthetic generator's codes, words or layout: it is the check that
alignment is not an artefact of the demo's world.

Written as the LXMERT bottom-up TSV (`raw/features/all_obj.tsv`), the Karpathy split file
(`raw/karpathy/dataset_coco.json`, COCO file names) and the official VQA v2 question and
annotation files (`raw/vqa/`), ready for the README's build commands.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from tests.raw_files import (
    RegionImage,
    vqa_annotation,
    vqa_question,
    write_karpathy,
    write_region_tsv,
    write_vqa,
)

CLASSES = (
    'dog', 'cat', 'horse', 'bird', 'cup', 'bottle', 'chair', 'table', 'car', 'bus', 'tree',
    'lamp', 'phone', 'book', 'clock', 'plate', 'boat', 'kite', 'bench', 'sofa',
)  # fmt: skip
TEMPLATES = (
    'a {0} next to a {1}',
    'there is a {0} and a {1} in the picture',
    'a photo of a {0}',
    'a {1} near a {0}',
    'a {0} , a {1} and a {2}',
)
CODE_SEED = 2024  # the "detector" is the same for every world
HEIGHT, WIDTH = 480, 640


@dataclasses.dataclass(frozen=True)
class CodeWorld:
    num_train: int = 800
    num_val: int = 100
    num_test: int = 2  # Karpathy's test split (the builders want every split); not used
    feature_dim: int = 2048
    boxes: int = 36
    boxes_per_object: tuple[int, int] = (3, 6)
    noise: float = 1.0  # std of the feature noise, in units of a code entry's std
    seed: int = 0

    def codes(self) -> np.ndarray:
        return np.random.default_rng((CODE_SEED, self.feature_dim)).standard_normal(
            (len(CLASSES), self.feature_dim), dtype=np.float32
        )


def coco_name(split: str, number: int) -> str:
    return f'COCO_{split}2014_{number:012d}'


def _image(world: CodeWorld, name: str, rng: np.random.Generator, codes: np.ndarray):
    classes = rng.choice(len(CLASSES), size=int(rng.integers(2, 5)), replace=False)
    labels, boxes = [], []
    for c in classes:
        cx, cy = rng.uniform(0.15, 0.85), rng.uniform(0.15, 0.85)
        side = rng.uniform(0.15, 0.35)
        for _ in range(int(rng.integers(*world.boxes_per_object, endpoint=True))):
            jitter = rng.normal(0, 0.03, 4)
            boxes.append([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2] + jitter)
            labels.append(int(c))
    if len(labels) > world.boxes:
        raise ValueError(f'{len(labels)} object boxes do not fit in {world.boxes}')
    while len(labels) < world.boxes:  # clutter
        x1, y1 = rng.uniform(0, 0.8, 2)
        boxes.append([x1, y1, x1 + rng.uniform(0.05, 0.2), y1 + rng.uniform(0.05, 0.2)])
        labels.append(-1)
    order = rng.permutation(world.boxes)
    labels = np.asarray(labels)[order]
    boxes = np.clip(np.asarray(boxes)[order], 0, 1)
    # Jitter may swap a box's corners: keep x1 <= x2 and y1 <= y2, as a detector's boxes are.
    boxes = np.concatenate(
        [np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])], axis=1
    )
    signal = np.where(labels[:, None] >= 0, codes[np.maximum(labels, 0)], 0)
    noise = world.noise * rng.standard_normal((world.boxes, world.feature_dim), dtype=np.float32)
    features = np.maximum(signal + noise, 0).astype(np.float32)
    scale = np.array([WIDTH, HEIGHT, WIDTH, HEIGHT], np.float32)
    region = RegionImage(
        image_id=name,
        height=HEIGHT,
        width=WIDTH,
        boxes=(boxes * scale).astype(np.float32),
        features=features,
        objects=np.where(labels >= 0, labels, len(CLASSES)).astype(np.int64),
        attrs=np.zeros(world.boxes, np.int64),
        objects_conf=np.ones(world.boxes, np.float32),
        attrs_conf=np.ones(world.boxes, np.float32),
    )
    return region, [CLASSES[c] for c in classes]


def _captions(names: list[str], rng: np.random.Generator) -> list[str]:
    out = []
    for template in rng.choice(TEMPLATES, size=5):
        picked = list(rng.permutation(names))
        picked += picked[:1] * 2  # templates naming three objects in a scene of two
        out.append(template.format(*picked))
    return out


def write_code_world(root: str | Path, world: CodeWorld = CodeWorld()) -> dict:
    """Writes the world's raw files under `root/raw`; returns {split: {image name: classes}}."""
    root = Path(root)
    rng = np.random.default_rng(world.seed)
    codes = world.codes()
    val_end = world.num_train + world.num_val
    numbers = {
        'train': range(1, world.num_train + 1),
        'val': range(world.num_train + 1, val_end + 1),
        'test': range(val_end + 1, val_end + world.num_test + 1),
    }
    images, captions, classes = [], {}, {}
    vqa = {'train': ([], []), 'val': ([], []), 'test': ([], [])}
    for split, ns in numbers.items():
        classes[split] = {}
        for n in ns:
            name = coco_name('train' if split == 'train' else 'val', n)
            region, named = _image(world, name, rng, codes)
            images.append(region)
            classes[split][name] = named
            captions[name] = (split, _captions(named, rng))
            for q in range(2):  # one present and one absent class, yes/no
                asked = named[0] if q == 0 else rng.choice(sorted(set(CLASSES) - set(named)))
                truth = 'yes' if q == 0 else 'no'
                other = 'no' if truth == 'yes' else 'yes'
                answers = [truth if rng.random() < 0.9 else other for _ in range(10)]
                question_id = n * 10 + q
                vqa[split][0].append(vqa_question(question_id, n, f'is there a {asked} ?'))
                vqa[split][1].append(
                    vqa_annotation(
                        question_id, n, answers, answer_type='yes/no', question_type='is there a'
                    )
                )
    write_region_tsv(root / 'raw/features/all_obj.tsv', images)
    write_karpathy(
        root / 'raw/karpathy/dataset_coco.json',
        [(f'{name}.jpg', split, texts) for name, (split, texts) in captions.items()],
    )
    for split, subtype in (('train', 'train2014'), ('val', 'val2014')):
        write_vqa(root / 'raw/vqa', subtype, *vqa[split])
    return classes
