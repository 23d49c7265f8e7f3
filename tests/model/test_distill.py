"""Distillation's pieces: word-level relations across tokenizers, their losses, the per-text teacher cache,
and the encoder's forward option that exposes the last layer without changing the plain forward."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
import torch

from encoder_serve.model import distill
from encoder_serve.model.checkpoint import save_checkpoint
from encoder_serve.model.encoder import EncoderClassifier, EncoderConfig
from encoder_serve.model.train import collate
from encoder_serve.tokenization import configure, train_wordpiece

TEXTS = ["i feel so happy today", "im not sure whether to be scared or excited about tomorrow",
         "ugh", "i feel strangely calm about the whole thing, honestly"] * 8


@pytest.fixture(scope="module")
def tokenizers():
    """Two vocabularies of different sizes: the same text gets different tokens, but the same words."""
    return (configure(train_wordpiece(TEXTS, vocab_size=60, min_frequency=1), 64),
            configure(train_wordpiece(TEXTS, vocab_size=200, min_frequency=1), 64))


def tiny(vocab: int, d_model: int, n_heads: int) -> EncoderClassifier:
    torch.manual_seed(0)
    return EncoderClassifier(EncoderConfig(vocab_size=vocab, max_length=64, d_model=d_model, n_layers=2,
                                           n_heads=n_heads, d_ff=64, labels=["a", "b"])).eval()


def last_layer_relations(model, tokenizer, texts, n_heads):
    encodings = tokenizer.encode_batch(texts)
    ids, mask = collate([e.ids for e in encodings], 0)
    _, layers = model.encoder(ids, mask, return_attention=True, return_values=True)
    groups = [distill.word_groups(e) for e in encodings]
    return distill.relations(*layers[-1], mask, n_heads, groups), groups


def test_word_level_relations_are_distributions_of_the_same_shape_across_tokenizers(tokenizers):
    small, large = tokenizers
    texts = TEXTS[:4]
    assert [len(e.ids) for e in small.encode_batch(texts)] != [len(e.ids) for e in large.encode_batch(texts)]
    with torch.no_grad():
        (t_att, t_val, t_valid), _ = last_layer_relations(tiny(200, 48, 6), large, texts, n_heads=2)
        (s_att, s_val, s_valid), _ = last_layer_relations(tiny(60, 16, 2), small, texts, n_heads=2)
    assert t_att.shape == s_att.shape and torch.equal(t_valid, s_valid)
    for matrix in (t_att, t_val, s_att, s_val):
        rows = matrix.sum(-1)[s_valid[:, None, :].expand(-1, 2, -1)]
        assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)
    assert distill.relation_loss(s_att, s_att, s_valid) == pytest.approx(0.0, abs=1e-6)
    assert distill.relation_loss(s_att, t_att, s_valid) > 0


def test_teacher_targets_cut_to_fewer_words_stay_distributions():
    G = 5  # [CLS] + 4 words; last column: the rest
    attention = torch.softmax(torch.randn(2, G, G + 1), -1)
    full = distill.Internals(4, attention, attention.clone(), torch.randn(G, 8))
    cut = full.cut(2)
    assert cut.attention.shape == (2, 3, 4) and cut.hidden.shape == (3, 8)
    assert torch.allclose(cut.attention.sum(-1), torch.ones(2, 3))
    batch_attention, _, batch_hidden = distill.batch_targets([cut, full], G=5)
    assert torch.allclose(batch_attention[0, :, :3].sum(-1), torch.ones(2, 3)) and batch_hidden.shape == (2, 5, 8)


def test_the_plain_forward_is_unchanged_and_the_option_returns_last_layer_values():
    model = tiny(60, 16, 2)
    ids = torch.randint(5, 60, (3, 7))
    mask = torch.ones_like(ids)
    hidden, layers = model.encoder(ids, mask, return_attention=True, return_values=True)
    weights, values = layers[-1]
    assert weights.shape == (3, 2, 7, 7) and values.shape == (3, 2, 7, 8)
    assert torch.allclose(model.head(hidden), model(ids, mask))
    assert all(torch.equal(w, m) for (w, _), m in zip(layers, model.attention_maps(ids, mask)))


def test_the_teacher_labels_each_text_once_and_only_new_texts_later(tokenizers, tmp_path, capsys):
    _, tokenizer = tokenizers
    path = save_checkpoint(tiny(200, 48, 6), tokenizer, tmp_path / "teacher")
    teacher = distill.Teacher([path], ["a", "b"], threads=1)
    first = teacher.logits(TEXTS[:3])
    assert "labelling 3" in capsys.readouterr().err
    both = teacher.logits(TEXTS[:3] + ["a text the teacher has not seen", TEXTS[0]])
    assert "3 of 4 distinct texts cached, labelling 1" in capsys.readouterr().err
    assert torch.allclose(both[:3], first) and torch.allclose(both[4], first[0])
    relations = teacher.internals(TEXTS[:2], n_heads=3)
    assert relations[0].attention.shape == (3, 6, 7)  # [CLS] + 5 words, 3 relation heads; + the rest column
    assert len(list((path / "teacher_cache").glob("*.safetensors"))) == 3  # logits twice, relations once
    assert not list((path / "teacher_cache").glob(".*"))  # no partial shard left behind


def add_one_shard(path: Path, k: int, start) -> None:
    cache = distill.TeacherCache(path, "logits")
    start.wait()  # every writer finds the same shards on disk, as trainings started together do
    cache.add([bytes([k]) * 32], [{"logits": torch.full((2,), float(k))}])


def test_trainings_labelling_for_one_teacher_at_once_keep_every_shard(tokenizers, tmp_path):
    _, tokenizer = tokenizers
    path = save_checkpoint(tiny(200, 48, 6), tokenizer, tmp_path / "teacher")
    context = multiprocessing.get_context("fork")
    start = context.Barrier(8)
    writers = [context.Process(target=add_one_shard, args=(path, k, start)) for k in range(8)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(60)
    assert [w.exitcode for w in writers] == [0] * 8
    found = distill.TeacherCache(path, "logits").load()
    assert sorted(found) == [bytes([k]) * 32 for k in range(8)]
    assert all(found[bytes([k]) * 32]["logits"][0] == k for k in range(8))


def test_synonym_augmentation_replaces_words_by_embedding_neighbours():
    neighbours = {"happy": ["glad"], "today": ["tonight"]}
    out = distill.augment_texts(["i feel so happy today"] * 20, 1, seed=0, kinds=("synonym",),
                                neighbours=neighbours)
    assert any("glad" in t for t in out) and all(len(t.split()) == 5 for t in out)
    with pytest.raises(ValueError, match="neighbours"):
        distill.augment_texts(["x"], 1, kinds=("synonym",))
