"""Our encoder with MiniLM-L6's weights computes what `transformers.BertModel` computes."""

from __future__ import annotations

import pytest
import torch

from encoder_serve.model.pretrained import load_pretrained, minilm_path
from encoder_serve.tokenization import encode

TEXTS = ["i feel so happy today", "i am not sure whether to be scared or excited about tomorrow", "ugh"]


def test_minilm_last_hidden_states_match_transformers_bert(emotion_test_rows):
    transformers = pytest.importorskip("transformers")
    path = minilm_path()
    ours, tokenizer = load_pretrained(path, labels=["a", "b"], max_length=128)
    theirs = transformers.BertModel.from_pretrained(str(path), attn_implementation="eager").eval()
    texts = TEXTS + [r["text"] for r in emotion_test_rows[:5]]
    ids, mask = (torch.from_numpy(a) for a in encode(tokenizer, texts))  # padded: the mask matters too
    with torch.no_grad():
        hidden, _ = ours.eval().encoder(ids, mask)
        expected = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    assert (hidden[real] - expected[real]).abs().max() <= 1e-4
