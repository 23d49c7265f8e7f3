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


def _student(vocab_size: int, d_model: int):
    from encoder_serve.model.encoder import EncoderClassifier, EncoderConfig

    return EncoderClassifier(EncoderConfig(vocab_size=vocab_size, max_length=32, d_model=d_model, n_layers=1,
                                           n_heads=2, d_ff=64, labels=["a", "b"]))


def test_projected_embeddings_keep_the_geometry_of_the_source_vocabulary():
    from encoder_serve.model.pretrained import embedding_source, project_embeddings

    source, tokenizer = embedding_source("minilm", ["a", "b"])
    vocab = tokenizer.get_vocab_size()
    full = _student(vocab, 384)  # full width: PCA is a rotation, distances survive exactly
    project_embeddings(source, full)
    ids = torch.tensor([tokenizer.token_to_id(w) for w in ("happy", "glad", "angry", "furious", "table")])
    src = source.encoder.embeddings.token.weight[ids]
    dst = full.encoder.embeddings.token.weight[ids]
    assert torch.allclose(torch.cdist(src, src), torch.cdist(dst, dst), atol=1e-4)
    assert torch.allclose(full.encoder.embeddings.position.weight,
                          source.encoder.embeddings.position.weight[:32] @ _basis(source, 384).float(), atol=1e-4)

    small = _student(vocab, 64)  # the top 64 directions: near words stay nearer than far ones
    project_embeddings(source, small)
    e = small.encoder.embeddings.token.weight
    happy, glad, table = (e[tokenizer.token_to_id(w)] for w in ("happy", "glad", "table"))
    cos = torch.nn.functional.cosine_similarity
    assert cos(happy, glad, dim=0) > cos(happy, table, dim=0) + 0.1

    with pytest.raises(ValueError, match="vocabularies differ"):
        project_embeddings(source, _student(1000, 64))


def _basis(model, width: int) -> torch.Tensor:
    w = model.encoder.embeddings.token.weight.double()
    return torch.linalg.svd(w - w.mean(0, keepdim=True), full_matrices=False)[2][:width].T


def test_a_student_trains_on_the_teachers_vocabulary_from_projected_embeddings(tmp_path, emotion_dir):
    from encoder_serve.model.data import load_dataset
    from encoder_serve.model.train import ModelOptions, build_model

    for split, n in (("train", 200), ("test", 50)):
        lines = (emotion_dir / f"{split}.jsonl").read_text().splitlines(keepends=True)
        (tmp_path / f"{split}.jsonl").write_text("".join(lines[:n]))
    dataset = load_dataset(tmp_path)
    model, tokenizer = build_model(ModelOptions(layers=1, d_model=48, heads=2, d_ff=64, max_length=40,
                                                embeddings_from="minilm"), dataset)
    assert tokenizer.get_vocab_size() == model.config.vocab_size == 30522  # MiniLM's WordPiece, not a new one
    assert tokenizer.encode("i feel wonderful").tokens[:4] == ["[CLS]", "i", "feel", "wonderful"]
    assert model.config.pad_token_id == tokenizer.token_to_id("[PAD]")
