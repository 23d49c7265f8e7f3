"""Tokenization shared by training, export and serving (torch-free).

We use Hugging Face `tokenizers` (Rust): a WordPiece vocabulary trained on the training texts for a
from-scratch model, or the `tokenizer.json` of a pretrained checkpoint. Every model directory and model
package carries its `tokenizer.json`; padding is never baked in (batches are padded to their longest text).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece(texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2) -> Tokenizer:
    """A BERT-style uncased WordPiece tokenizer trained on `texts`; [PAD] gets id 0."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=SPECIAL_TOKENS)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    return tokenizer


def load_tokenizer(path: str | Path, max_length: int) -> Tokenizer:
    """Load a tokenizer.json (a file, or a directory holding one) and set truncation to `max_length`."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer not found: {path}")
    tokenizer = Tokenizer.from_file(str(path))
    return configure(tokenizer, max_length)


def configure(tokenizer: Tokenizer, max_length: int) -> Tokenizer:
    """Truncate to `max_length` tokens (special tokens included); never pad inside the tokenizer."""
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    return tokenizer


def pad_token_id(tokenizer: Tokenizer) -> int:
    pad = tokenizer.token_to_id("[PAD]")
    return 0 if pad is None else pad


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad id lists to the longest one: (input_ids, attention_mask), both int64 (B, T)."""
    T = max(len(s) for s in sequences)
    input_ids = np.full((len(sequences), T), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(sequences), T), dtype=np.int64)
    for i, s in enumerate(sequences):
        input_ids[i, : len(s)] = s
        attention_mask[i, : len(s)] = 1
    return input_ids, attention_mask


def encode(tokenizer: Tokenizer, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Tokenize (truncating as configured) and pad a batch of texts."""
    encodings = tokenizer.encode_batch(list(texts))
    return pad_batch([e.ids for e in encodings], pad_token_id(tokenizer))
