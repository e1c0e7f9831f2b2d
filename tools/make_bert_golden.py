r"""Writes the BERT parity goldens under tests/golden/ with PyTorch, once; CI never runs this.

    python -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch==2.13.0 transformers safetensors numpy pillow ml_collections
    PYTHONPATH=. /tmp/torchenv/bin/python tools/make_bert_golden.py

A tiny random `transformers.BertForPreTraining` (no download) whose vocabulary covers the
synthetic world's words, so a fine-tune on the embedded synthetic data can start from it:
- tests/golden/bert_tiny/: `save_pretrained` output (model.safetensors with the `bert.` prefix,
  the pooler, the MLM head and the next-sentence head; config.json) and vocab.txt;
- tests/golden/bert_tiny_outputs.npz: a padded batch of sentence pairs (`input_ids`,
  `attention_mask`, `token_type_ids`) and the model's `last_hidden_state`, `pooler_output` and
  MLM `prediction_logits` on it (eval mode: no dropout).
Every parameter is drawn at random, LayerNorm scales and biases included, so that a mapping
that swaps or drops one shows in the outputs.
"""

from __future__ import annotations

import pathlib
import string

import numpy as np
import torch
import transformers

from configs import demo
from semvlp_jax.data import synthetic, synthetic_tasks

GOLDEN = pathlib.Path(__file__).resolve().parent.parent / 'tests' / 'golden'
SPECIAL = ('[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]')
MAX_POSITIONS = 40  # more than the demo's max_text_len (24): the import keeps the first rows


def vocabulary() -> list[str]:
    """Specials, the synthetic world's words, then characters so any word has pieces."""
    data = demo.get_config().data
    texts = synthetic_tasks.text_corpus(synthetic.SyntheticConfig.from_data(data), 200)
    words = sorted({w for text in texts for w in text.lower().replace('?', ' ? ').split()})
    characters = list(string.ascii_lowercase) + list(string.digits) + list('?.,!')
    pieces = [f'##{c}' for c in string.ascii_lowercase + string.digits]
    seen, vocab = set(), []
    for token in (*SPECIAL, *words, *characters, *pieces):
        if token not in seen:
            seen.add(token)
            vocab.append(token)
    return vocab


def main() -> None:
    torch.manual_seed(0)
    vocab = vocabulary()
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=MAX_POSITIONS,
        type_vocab_size=2,
        hidden_act='gelu',
        layer_norm_eps=1e-12,
        pad_token_id=0,
    )
    model = transformers.BertForPreTraining(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name == 'cls.predictions.decoder.weight':
                continue  # tied to the word embeddings
            scale = 0.1 if 'LayerNorm' in name else 0.2
            centre = 1.0 if 'LayerNorm.weight' in name else 0.0
            parameter.copy_(centre + scale * torch.randn_like(parameter))
    out_dir = GOLDEN / 'bert_tiny'
    model.save_pretrained(out_dir, safe_serialization=True)
    (out_dir / 'vocab.txt').write_text('\n'.join(vocab) + '\n')

    # Three sentence pairs, padded to 12: type 0 for the first sentence, 1 for the second.
    rng = np.random.default_rng(0)
    lengths, first = [12, 9, 5], [5, 4, 2]
    input_ids = np.zeros((3, 12), np.int64)
    token_type_ids = np.zeros((3, 12), np.int64)
    attention_mask = np.zeros((3, 12), np.int64)
    for row, (length, split) in enumerate(zip(lengths, first)):
        input_ids[row, :length] = rng.integers(len(SPECIAL), len(vocab), length)
        input_ids[row, 0] = vocab.index('[CLS]')
        input_ids[row, length - 1] = vocab.index('[SEP]')
        token_type_ids[row, split:length] = 1
        attention_mask[row, :length] = 1
    with torch.no_grad():
        outputs = model(
            input_ids=torch.tensor(input_ids),
            attention_mask=torch.tensor(attention_mask),
            token_type_ids=torch.tensor(token_type_ids),
            output_hidden_states=True,
        )
        pooled = model.bert.pooler(outputs.hidden_states[-1])
    np.savez(
        GOLDEN / 'bert_tiny_outputs.npz',
        input_ids=input_ids,
        attention_mask=attention_mask,
        token_type_ids=token_type_ids,
        last_hidden_state=outputs.hidden_states[-1].numpy(),
        pooler_output=pooled.numpy(),
        prediction_logits=outputs.prediction_logits.numpy(),
    )
    print(f'wrote {out_dir} ({len(vocab)} pieces) and {GOLDEN / "bert_tiny_outputs.npz"}')


if __name__ == '__main__':
    main()
