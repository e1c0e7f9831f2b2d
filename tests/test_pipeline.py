"""The synthetic pre-training pipeline: example contents and per-process sharding."""

import grain
import numpy as np

from semvlp_jax.data import pipeline
from tests.conftest import tiny_config


def test_process_shares_are_disjoint_complete_and_ordered():
    examples = grain.MapDataset.range(48)
    shares = [list(pipeline.process_share(examples, 8, p, 4)) for p in range(4)]
    assert all(len(share) == 12 for share in shares)
    for batch in range(6):
        rows = [x for share in shares for x in share[batch * 2 : batch * 2 + 2]]
        assert rows == list(range(batch * 8, batch * 8 + 8))


def test_two_processes_together_read_exactly_the_single_process_batches(tmp_path):
    config = tiny_config()

    def batches(process_index, process_count):
        data = pipeline.synthetic_pretraining(
            config.data,
            tmp_path,
            batch_size=8,
            seed=0,
            process_index=process_index,
            process_count=process_count,
        )
        return [next(data.train) for _ in range(3)], data.val

    whole_train, whole_val = batches(0, 1)
    (train_0, val_0), (train_1, val_1) = batches(0, 2), batches(1, 2)
    for whole, first, second in zip(whole_train + whole_val, train_0 + val_0, train_1 + val_1):
        assert first['text_ids'].shape[0] == 4
        for field in whole:
            np.testing.assert_array_equal(
                np.concatenate([first[field], second[field]]), whole[field], err_msg=field
            )


def test_examples_hold_masked_text_and_regions(tiny_batch):
    batch = tiny_batch
    masked = batch['mlm_weights'] > 0
    assert masked.any()
    # Masked positions point inside the real text and never at [CLS] (position 0).
    positions = batch['mlm_positions'][masked]
    assert (positions > 0).all()
    rows = np.nonzero(masked)[0]
    assert batch['text_mask'][rows, positions].all()
    # Questions carry soft answer scores from 0.3 to 1.0; captions carry none.
    questions = batch['is_question'].astype(bool)
    assert (batch['answer_scores'][~questions] == 0).all()
    if questions.any():
        assert (batch['answer_scores'][questions].max(axis=1) >= 0.3).all()
    # Masked regions are real regions and carry their labels.
    region_rows, slots = np.nonzero(batch['mop_weights'] > 0)
    region_positions = batch['mop_positions'][region_rows, slots]
    assert batch['region_mask'][region_rows, region_positions].all()
    assert (batch['mop_object_labels'][region_rows, slots] >= 0).all()
