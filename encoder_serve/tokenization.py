"""Tokenization shared by training, export and serving (torch-free).

We use Hugging Face `tokenizers` (Rust): a WordPiece vocabulary trained on the training texts for a
from-scratch model, or the `tokenizer.json` of a pretrained checkpoint. Every model directory and model
package carries its `tokenizer.json`; padding is never baked in (batches are padded to their longest text).
"""

from __future__ import annotations

import json
import re
import sys
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


# Printable-ASCII text after BERT's cleaning: ASCII control characters other than tab, newline and carriage
# return are dropped (those three become spaces); every remaining non-alphanumeric character is punctuation.
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ASCII_PIECES = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")
# Probes the fast path must tokenize exactly as the tokenizer does before it is used: punctuation, digits,
# every ASCII control character, words split into pieces or unknown, a word past WordPiece's length limit,
# text past the truncation limit, and nothing at all.
_PROBES = (
    "", "i feel GREAT today!!!", "Don't   stop\tme\nnow\r... #1 @home (50%) $3.20 ~a^b `x` {y} [z] |w| \\v/",
    "".join(chr(c) for c in range(128)), "unbelievably antidisestablishmentarianism qwxzv zzzzzzz",
    "x" * 99 + " " + "y" * 101 + " " + "ab" * 60, "word " * 200, " ".join(str(n) for n in range(300)),
)


class Encoder:
    """A tokenizer's token ids for serving, with a fast path for the common case.

    For the BERT uncased pipeline (BertNormalizer with cleaning and lowercasing, BertPreTokenizer, WordPiece,
    a fixed [CLS] … [SEP] template, no padding), a text of ASCII characters only is tokenized in Python:
    cleaned and lowercased, split into words and punctuation by one regular expression, each word looked up
    in the vocabulary, and only words not in it as a whole passed to the tokenizer's own WordPiece model.
    On a tweet that is about five times faster than the full pipeline, whose normalizer and pre-tokenizer
    track every character's offsets for a caller that only wants the ids. Any other text (non-ASCII, or
    containing a special token such as "[MASK]") and any other tokenizer go through `encode_batch`. The two
    give identical ids: the fast path is checked against the tokenizer on probe texts before it is used, and
    in tests on the dataset and on random ASCII.
    """

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.pad_id = pad_token_id(tokenizer)
        self._fast = self._fast_path_config(tokenizer)
        if self._fast and any(self._fast_ids(t) != self._slow_ids(t) for t in _PROBES):
            self._fast = None

    @property
    def fast(self) -> bool:
        """Whether ASCII texts take the fast path."""
        return self._fast is not None

    def ids(self, texts: Sequence[str]) -> tuple[list[list[int]], list[int]]:
        """The ids of each text (truncated as configured, special tokens added) and the indices of the texts
        that were truncated."""
        ids: list[list[int] | None] = []
        truncated: list[int] = []
        slow: list[int] = []
        for k, text in enumerate(texts):
            found = self._fast_ids(text) if self._fast else None
            if found is None:
                slow.append(k)
            elif found[1]:
                truncated.append(k)
            ids.append(found and found[0])
        if slow:
            for k, encoding in zip(slow, self.tokenizer.encode_batch([texts[k] for k in slow])):
                ids[k] = encoding.ids
                if encoding.overflowing:
                    truncated.append(k)
            truncated.sort()
        return ids, truncated  # type: ignore[return-value]

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Tokenize and pad a batch of texts: (input_ids, attention_mask)."""
        return pad_batch(self.ids(texts)[0], self.pad_id)

    def _slow_ids(self, text: str) -> tuple[list[int], bool]:
        encoding = self.tokenizer.encode(text)
        return encoding.ids, bool(encoding.overflowing)

    def _fast_ids(self, text: str) -> tuple[list[int], bool] | None:
        if not text.isascii():
            return None
        printable = text.isprintable()
        lowered = (text if printable else _ASCII_CONTROL.sub("", text)).lower()
        vocab, model, prefix, suffix, room, specials = self._fast
        # special tokens are matched before normalization or after it: either way, the full pipeline's case
        if (any(c in lowered for c in specials[0]) and any(s in lowered for s in specials[1])
                or not printable and any(s in text.lower() for s in specials[1])):
            return None
        # every word gives at least one id: past `room` words the rest cannot change the ids, only show the cut
        words = _ASCII_PIECES.findall(lowered)[:room + 1]
        found = [vocab.get(word) for word in words]
        if None in found:  # words not in the vocabulary as a whole: the tokenizer's WordPiece splits them
            ids = prefix.copy()
            for word, i in zip(words, found):
                if i is None:
                    ids.extend([t.id for t in model.tokenize(word)])
                else:
                    ids.append(i)
        else:
            ids = prefix + found
        cut = len(ids) > room
        if cut:
            del ids[room:]
        ids += suffix
        return ids, cut

    @staticmethod
    def _fast_path_config(tokenizer: Tokenizer) -> tuple | None:
        """What the fast path needs, or None where this tokenizer is not the pipeline it reproduces."""
        spec = json.loads(tokenizer.to_str())
        normalizer, pre, model, post = (spec.get(k) or {} for k in ("normalizer", "pre_tokenizer", "model",
                                                                      "post_processor"))
        truncation = tokenizer.truncation
        if (normalizer.get("type") != "BertNormalizer" or not normalizer.get("clean_text")
                or not normalizer.get("lowercase") or pre.get("type") != "BertPreTokenizer"
                or model.get("type") != "WordPiece" or tokenizer.padding is not None
                or (truncation and (truncation["direction"] != "right" or truncation["stride"] != 0))):
            return None
        if post.get("type") == "TemplateProcessing":  # special tokens, the text, special tokens
            prefix, suffix, texts = [], [], 0
            for piece in post["single"]:
                if "Sequence" in piece:
                    texts += 1
                else:
                    (suffix if texts else prefix).extend(post["special_tokens"][piece["SpecialToken"]["id"]]["ids"])
            if texts != 1:
                return None
        elif post.get("type") == "BertProcessing":
            prefix, suffix = [post["cls"][1]], [post["sep"][1]]
        else:
            return None
        limit = truncation["max_length"] if truncation else None
        room = limit - len(suffix) if limit else sys.maxsize - 1  # ids before the suffix, at most
        # a word WordPiece sees as a whole when it is in the vocabulary and not past its length limit
        most = model.get("max_input_chars_per_word", 100)
        vocab = {w: i for w, i in tokenizer.get_vocab(with_added_tokens=False).items() if len(w) <= most}
        contents = {t.content.lower() for t in tokenizer.get_added_tokens_decoder().values()} - {""}
        specials = ({c[0] for c in contents}, tuple(contents))  # their first characters: a quick first test
        return vocab, tokenizer.model, prefix, suffix, room, specials
