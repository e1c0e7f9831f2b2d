"""BERT / LXMERT masking and BEiT block masking of patches, per example, in numpy (runs in the
input workers).

Each position is chosen independently with probability `prob`; a chosen token becomes [MASK]
80% of the time, a random token 10%, and stays 10% (BERT). A chosen region is zeroed 80% of the
time, replaced by another real region's feature 10%, and kept 10% (LXMERT). Predictions are
returned as fixed-size position lists (`max_predictions` slots, weight 0 in unused slots) so the
heads score only masked positions.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Masked:
    """values: the input with masking applied; positions/weights [max_predictions]; targets are
    the original values at `positions` ([max_predictions] ids or [max_predictions, dim] features)."""

    values: np.ndarray
    positions: np.ndarray
    targets: np.ndarray
    weights: np.ndarray


def _choose(
    eligible: np.ndarray, prob: float, max_predictions: int, rng: np.random.Generator
) -> np.ndarray:
    """Indices chosen with probability `prob` among eligible ones, at most max_predictions."""
    chosen = np.flatnonzero(eligible & (rng.random(eligible.shape) < prob))
    if len(chosen) > max_predictions:
        chosen = np.sort(rng.choice(chosen, max_predictions, replace=False))
    return chosen


def slots(chosen: np.ndarray, max_predictions: int) -> tuple[np.ndarray, np.ndarray]:
    positions = np.zeros(max_predictions, np.int32)
    weights = np.zeros(max_predictions, np.float32)
    positions[: len(chosen)] = chosen
    weights[: len(chosen)] = 1.0
    return positions, weights


def mask_tokens(
    ids: np.ndarray,
    eligible: np.ndarray,
    rng: np.random.Generator,
    *,
    mask_id: int,
    random_ids: np.ndarray,
    prob: float,
    max_predictions: int,
) -> Masked:
    """ids [len] int; eligible [len] bool (False for special and padding tokens).

    random_ids: the ids a random replacement is drawn from (ordinary, non-special tokens).
    """
    chosen = _choose(eligible, prob, max_predictions, rng)
    masked = ids.copy()
    action = rng.random(len(chosen))
    to_mask = chosen[action < 0.8]
    to_random = chosen[(action >= 0.8) & (action < 0.9)]
    masked[to_mask] = mask_id
    masked[to_random] = rng.choice(random_ids, len(to_random))
    positions, weights = slots(chosen, max_predictions)
    targets = np.where(weights > 0, ids[positions], 0).astype(np.int32)
    return Masked(masked, positions, targets, weights)


def mask_regions(
    features: np.ndarray,
    region_mask: np.ndarray,
    rng: np.random.Generator,
    *,
    prob: float,
    max_predictions: int,
) -> Masked:
    """features [regions, dim]; region_mask [regions] bool (True for real regions)."""
    real = np.flatnonzero(region_mask)
    chosen = _choose(region_mask.astype(bool), prob, max_predictions, rng)
    masked = features.copy()
    action = rng.random(len(chosen))
    masked[chosen[action < 0.8]] = 0.0
    for i in chosen[(action >= 0.8) & (action < 0.9)]:
        others = real[real != i]
        if len(others):
            masked[i] = features[rng.choice(others)]
    positions, weights = slots(chosen, max_predictions)
    targets = features[positions] * weights[:, None]
    return Masked(masked, positions, targets.astype(np.float32), weights)


def mask_patch_blocks(
    grid: int,
    target: int,
    rng: np.random.Generator,
    *,
    min_block: int = 16,
    min_aspect: float = 0.3,
    max_attempts: int = 10,
) -> np.ndarray:
    """BEiT's block-wise masking: bool [grid * grid] (row-major) with about `target` patches set.

    Rectangles of at least `min_block` patches and aspect ratio in [min_aspect, 1/min_aspect]
    (log-uniform) are placed at random until `target` patches are masked; a rectangle counts only
    the patches it newly covers and is accepted when that is between 1 and what is still missing.
    When `max_attempts` draws in a row add nothing the mask stays short of `target` (BEiT does
    the same), so the count is `target` or slightly below it, never above.
    """
    mask = np.zeros((grid, grid), bool)
    log_aspect = (np.log(min_aspect), -np.log(min_aspect))
    count = 0
    while count < target:
        missing = target - count
        added = 0
        for _ in range(max_attempts):
            area = rng.uniform(min_block, max(min_block, missing))
            aspect = np.exp(rng.uniform(*log_aspect))
            h = int(round(np.sqrt(area * aspect)))
            w = int(round(np.sqrt(area / aspect)))
            if not (0 < h < grid and 0 < w < grid):
                continue
            top, left = int(rng.integers(0, grid - h + 1)), int(rng.integers(0, grid - w + 1))
            new = h * w - int(mask[top : top + h, left : left + w].sum())
            if 0 < new <= missing:
                mask[top : top + h, left : left + w] = True
                added = new
                break
        if added == 0:
            break
        count += added
    return mask.reshape(-1)
