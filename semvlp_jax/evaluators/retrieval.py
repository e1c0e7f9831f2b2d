"""Recall@K for image-text retrieval with several captions per image (Flickr30K / COCO style).

Two score matrices are taken, one per direction, because with a shortlist + re-ranking the
directions are scored separately; with a single matrix pass `scores` and `scores.T`.

Ranks are 0-based and ties are broken against the ground truth: the rank of the best ground truth
is the number of *other* candidates scoring >= it. An untrained model (or a collapsed one) that
gives every candidate the same score must not look perfect, and an optimistic tie-break would give
it R@1 = 100. Candidates left out of a shortlist carry -inf; a ground truth at -inf therefore ties
with every other -inf candidate and is ranked behind all of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _validate(
    i2t_scores: np.ndarray, t2i_scores: np.ndarray, text_image: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    i2t = np.asarray(i2t_scores)
    t2i = np.asarray(t2i_scores)
    text_image = np.asarray(text_image)
    if i2t.ndim != 2:
        raise ValueError(f'i2t_scores must be 2-D [n_images, n_texts], got shape {i2t.shape}')
    n_images, n_texts = i2t.shape
    if n_images == 0 or n_texts == 0:
        raise ValueError(f'i2t_scores must have at least one image and one text, got {i2t.shape}')
    if t2i.shape != (n_texts, n_images):
        raise ValueError(
            f't2i_scores must have shape [n_texts, n_images] = {(n_texts, n_images)} to match '
            f'i2t_scores {i2t.shape}, got {t2i.shape}'
        )
    if text_image.shape != (n_texts,):
        raise ValueError(
            f'text_image must have shape [n_texts] = ({n_texts},), got {text_image.shape}'
        )
    if not np.issubdtype(text_image.dtype, np.integer):
        raise ValueError(
            f'text_image must hold integer image indices, got dtype {text_image.dtype}'
        )
    bad = np.flatnonzero((text_image < 0) | (text_image >= n_images))
    if bad.size:
        raise ValueError(
            f'text_image[{bad[0]}] = {text_image[bad[0]]} is outside [0, {n_images}) '
            f'({bad.size} texts out of range)'
        )
    captions_per_image = np.bincount(text_image, minlength=n_images)
    empty = np.flatnonzero(captions_per_image == 0)
    if empty.size:
        raise ValueError(
            f'image {empty[0]} has no text describing it ({empty.size} images without texts); '
            'image->text recall is undefined for it'
        )
    for name, scores in (('i2t_scores', i2t), ('t2i_scores', t2i)):
        if scores.dtype.kind not in 'iuf':
            raise ValueError(f'{name} must hold real numbers, got dtype {scores.dtype}')
        n_nan = int(np.isnan(scores).sum()) if scores.dtype.kind == 'f' else 0
        if n_nan:
            raise ValueError(f'{name} contains {n_nan} NaN scores')
    return i2t, t2i, text_image


def ranks(
    i2t_scores: np.ndarray, t2i_scores: np.ndarray, text_image: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pessimistic 0-based rank of the best ground truth for every query.

    Returns `(i2t_ranks [n_images], t2i_ranks [n_texts])`. For an image the ground truths are all
    its captions and the best-scoring one counts; for a text it is its own image.
    """
    i2t, t2i, text_image = _validate(i2t_scores, t2i_scores, text_image)
    n_images, n_texts = i2t.shape

    gt = text_image[None, :] == np.arange(n_images)[:, None]  # [n_images, n_texts]
    best_gt = np.where(gt, i2t, -np.inf).max(axis=1)
    i2t_ranks = ((i2t >= best_gt[:, None]) & ~gt).sum(axis=1)

    gt_score = t2i[np.arange(n_texts), text_image]
    others = np.ones_like(t2i, dtype=bool)
    others[np.arange(n_texts), text_image] = False
    t2i_ranks = ((t2i >= gt_score[:, None]) & others).sum(axis=1)
    return i2t_ranks, t2i_ranks


def recall_at_k(
    i2t_scores: np.ndarray,
    t2i_scores: np.ndarray,
    text_image: np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Recall@K in both directions as percentages, plus 'rsum' (their sum).

    Keys are 'i2t_r{k}' and 't2i_r{k}' for each k, then 'rsum'. An image counts as retrieved at K
    if any of its captions ranks within the top K; a text if its own image does.
    """
    ks = tuple(ks)
    if not ks or any(
        isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1 for k in ks
    ):
        raise ValueError(f'ks must be a non-empty sequence of positive integers, got {ks}')
    i2t_ranks, t2i_ranks = ranks(i2t_scores, t2i_scores, text_image)
    result = {}
    for direction, r in (('i2t', i2t_ranks), ('t2i', t2i_ranks)):
        for k in ks:
            result[f'{direction}_r{int(k)}'] = 100.0 * float(np.mean(r < k))
    result['rsum'] = float(sum(result.values()))
    return result
