"""Image-text retrieval (Flickr30K / COCO style: several captions per image).

Fine-tuning uses ITM (negatives drawn from the global batch, `config.itm_negative_prob`) and,
with a contrastive head (`config.model.contrastive_dim` > 0), ITC; a fine-tune of an MVPTR run
(the staged mode) uses MVPTR's pair instead: VSC and ITM against the hardest in-batch
negatives (`itm_hardest`), the captions with their phrases and the images with their tags.

Evaluation ranks every caption of the validation images for every image, and every image for
every caption:
  shortlist_k = k > 0: uni-modal contrastive embeddings (one pass per image and per caption)
      give cheap scores; for each image its top-k captions, and for each caption its top-k
      images, are re-scored by ITM in the configured mode; candidates off the shortlist rank
      below all of them.
  shortlist_k = 0 or None: ITM scores every image-caption pair.
ITM pairs are scored in global batches sharded over the devices, so the cost grows with the
number of pairs scored, and memory with the batch only (plus the N_images x N_captions float32
score matrix on the host). The score of a pair is ITM's matched-minus-unmatched logit.
"""

from __future__ import annotations

import collections
import json

import numpy as np

from semvlp_jax.data import synthetic_tasks
from semvlp_jax.data.pipeline import image_key
from semvlp_jax.data.records import CaptionRecord
from semvlp_jax.errors import ConfigError
from semvlp_jax.evaluators import retrieval as retrieval_eval
from semvlp_jax.tasks import base

# The captions of one image, in caption order: what a retrieval example is drawn from.
ImageCaptions = tuple[CaptionRecord, ...]


def predict_matching(model, batch, mode):
    logits = model.matching_head(model(batch, mode=mode).pooled)
    return {'score': logits[:, 1] - logits[:, 0]}


def predict_text_embeddings(model, batch, mode):
    return {'embedding': model.embed_texts(batch, mode=mode)}


def predict_image_embeddings(model, batch, mode):
    return {'embedding': model.embed_images(batch, mode=mode)}


class RetrievalSet:
    """The validation images and all their captions as arrays; `text_image[t]` is caption t's
    image (its row in the image arrays)."""

    def __init__(self, groups: list[ImageCaptions], encode, images):
        texts = [
            encode(record.caption, record.phrase_tuples) for group in groups for record in group
        ]
        self.texts = {
            'text_ids': np.stack([ids for ids, _ in texts]),
            'text_mask': np.stack([mask for _, mask in texts]),
        }
        self.images = base.stack([images(group[0].image_id) for group in groups])
        self.text_image = np.repeat(np.arange(len(groups)), [len(group) for group in groups])

    def pair_rows(self, pairs: np.ndarray):
        """`rows` for `EvalContext.predict` over (image, text) index pairs [n, 2]."""

        def rows(indices):
            image, text = pairs[indices, 0], pairs[indices, 1]
            return {
                **{k: v[text] for k, v in self.texts.items()},
                **{k: v[image] for k, v in self.images.items()},
            }

        return rows


def shortlist(similarity: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(image, text) pairs to re-score: each image's top-k texts and each text's top-k images by
    `similarity` [texts, images]; returns (i2t pairs [images * k, 2], t2i pairs [texts * k, 2])."""
    num_texts, num_images = similarity.shape
    k_texts, k_images = min(k, num_texts), min(k, num_images)
    top_texts = np.argsort(-similarity.T, axis=1, kind='stable')[:, :k_texts]
    top_images = np.argsort(-similarity, axis=1, kind='stable')[:, :k_images]
    i2t = np.stack([np.repeat(np.arange(num_images), k_texts), top_texts.ravel()], axis=1)
    t2i = np.stack([top_images.ravel(), np.repeat(np.arange(num_texts), k_images)], axis=1)
    return i2t, t2i


def embedding_similarity(context, params, mode: str, data: RetrievalSet) -> np.ndarray:
    """The contrastive embeddings' similarity [texts, images]: the shortlist's order."""
    num_images = len(next(iter(data.images.values())))  # region fields or pixels
    num_texts = len(data.text_image)
    texts = context.predict(
        predict_text_embeddings, params, mode, num_texts, base.take(data.texts)
    )['embedding']
    images = context.predict(
        predict_image_embeddings, params, mode, num_images, base.take(data.images)
    )['embedding']
    return texts @ images.T


def score_matrices(context, params, mode: str, data: RetrievalSet, k: int | None, similarity=None):
    """(i2t [images, texts], t2i [texts, images]) scores: ITM on the shortlisted pairs (or all
    pairs), -inf elsewhere. The shortlist ranks by `similarity` [texts, images], computed by
    `embedding_similarity` unless given."""
    num_images = len(next(iter(data.images.values())))  # region fields or pixels
    num_texts = len(data.text_image)
    if not k:
        pairs = np.stack(np.meshgrid(np.arange(num_images), np.arange(num_texts), indexing='ij'))
        pairs = pairs.reshape(2, -1).T
        scores = context.predict(predict_matching, params, mode, len(pairs), data.pair_rows(pairs))[
            'score'
        ].reshape(num_images, num_texts)
        return scores, scores.T
    if similarity is None:
        similarity = embedding_similarity(context, params, mode, data)
    i2t_pairs, t2i_pairs = shortlist(similarity, k)
    pairs, where = np.unique(np.concatenate([i2t_pairs, t2i_pairs]), axis=0, return_inverse=True)
    scores = context.predict(predict_matching, params, mode, len(pairs), data.pair_rows(pairs))
    scores = scores['score'][where.ravel()]
    i2t = np.full((num_images, num_texts), -np.inf, np.float32)
    t2i = np.full((num_texts, num_images), -np.inf, np.float32)
    i2t[i2t_pairs[:, 0], i2t_pairs[:, 1]] = scores[: len(i2t_pairs)]
    t2i[t2i_pairs[:, 1], t2i_pairs[:, 0]] = scores[len(i2t_pairs) :]
    return i2t, t2i


class Retrieval(base.RecordTask):
    name = 'retrieval'
    dataset = 'karpathy'
    built_splits = {'train': 'train', 'val': 'test'}
    objectives = frozenset({'itm', 'itc', 'vsc', 'itm_hardest'})
    itm_negatives = True
    table_metrics = ('retrieval_i2t_r1', 'retrieval_t2i_r1', 'retrieval_rsum')

    def val_scenes(self) -> int:
        return self.config.task.eval_images

    def synthetic_records(self, split: str) -> list[CaptionRecord]:
        return synthetic_tasks.captions(self.images.scenes[split])

    def elements(self, records: list[CaptionRecord], split: str) -> list[ImageCaptions]:
        """Each image's captions in caption order, images in first-seen order; for validation,
        the first `config.task.eval_images` images (e.g. Karpathy's 1k test)."""
        by_image: dict[str, list[CaptionRecord]] = collections.defaultdict(list)
        for record in records:
            by_image[record.image_id].append(record)
        groups = [
            tuple(sorted(captions, key=lambda r: r.caption_index)) for captions in by_image.values()
        ]
        return groups[: self.config.task.eval_images] if split == 'val' else groups

    def example(self, group: ImageCaptions, rng: np.random.Generator) -> base.Example:
        """One of the image's captions (drawn anew every epoch) with the image (its regions, or
        a training view of its pixels) and its `image_key` (no caption of it is a negative)."""
        record = group[rng.integers(len(group))]
        text_ids, text_mask = self.encode(record.caption, record.phrase_tuples)
        return {
            'text_ids': text_ids,
            'text_mask': text_mask,
            **self.images(record.image_id, rng),
            'is_question': np.int32(0),
            'image_key': np.int32(image_key(record.image_id)),
        }

    def validation_examples(self, val: list[ImageCaptions]) -> RetrievalSet:
        return RetrievalSet(val, self.encode, self.images)

    def predict(self, context: base.EvalContext, params, mode: str):
        """(i2t, t2i) ITM scores and the shortlist's similarity [texts, images] (None when
        ITM scores every pair)."""
        k, data = self.config.task.shortlist_k, self.val_examples
        similarity = embedding_similarity(context, params, mode, data) if k else None
        return (*score_matrices(context, params, mode, data, k, similarity), similarity)

    def score(self, predictions: tuple[np.ndarray, np.ndarray, np.ndarray | None]):
        """Recalls of the task's ranking (the ITM re-ranked shortlist) as `retrieval_<key>`,
        and those of the contrastive embeddings' own order as `retrieval_shortlist_<key>`
        (R@1 both ways and rsum): what the re-ranking adds, or costs."""
        i2t, t2i, similarity = predictions
        text_image = self.val_examples.text_image
        recalls = retrieval_eval.recall_at_k(i2t, t2i, text_image)
        metrics = {f'retrieval_{k}': v / 100 for k, v in recalls.items()}
        if similarity is not None:
            own = retrieval_eval.recall_at_k(similarity.T, similarity, text_image)
            recalls = {**recalls, 'shortlist': own}
            metrics.update(
                {f'retrieval_shortlist_{k}': own[k] / 100 for k in ('i2t_r1', 't2i_r1', 'rsum')}
            )
        write = lambda path: path.write_text(json.dumps(recalls))  # noqa: E731
        return metrics, [base.ResultFile('recall', '.json', write)]

    @classmethod
    def check(cls, config) -> None:
        k, eval_images = config.task.get('shortlist_k'), config.task.get('eval_images')
        if config.data.name != 'synthetic':
            if not isinstance(eval_images, int) or eval_images < 1:
                raise ConfigError(
                    f'config.task.eval_images={eval_images!r} must be an integer >= 1'
                )
        elif not isinstance(eval_images, int) or not 1 <= eval_images <= config.data.num_val:
            raise ConfigError(
                f'config.task.eval_images={eval_images!r} must be an integer in '
                f'1..config.data.num_val ({config.data.num_val})'
            )
        if k is not None and (not isinstance(k, int) or k < 0):
            raise ConfigError(f'config.task.shortlist_k={k!r} must be None, 0 (all pairs) or k > 0')
        if k and not config.model.get('contrastive_dim'):
            raise ConfigError(
                f'config.task.shortlist_k={k} needs config.model.contrastive_dim > 0: the '
                'shortlist scores are contrastive embeddings (set shortlist_k=0 to score all '
                'pairs by ITM)'
            )
