"""The encoder's contracts: shapes, padding invariance, attention weights, for every configuration."""

from __future__ import annotations

import itertools

import pytest
import torch

from encoder_serve.model.encoder import NORM_PLACEMENTS, POSITION_KINDS, EncoderClassifier, EncoderConfig

CONFIGS = list(itertools.product(POSITION_KINDS, NORM_PLACEMENTS))


def tiny(position: str, norm: str, **overrides) -> EncoderClassifier:
    torch.manual_seed(0)
    config = EncoderConfig(vocab_size=50, max_length=16, d_model=32, n_layers=2, n_heads=4, d_ff=64,
                           position=position, norm=norm, labels=["a", "b", "c"], **overrides)
    return EncoderClassifier(config).eval()


@pytest.mark.parametrize("position,norm", CONFIGS)
def test_logits_and_attention_have_the_documented_shapes(position, norm):
    model = tiny(position, norm)
    ids = torch.randint(1, 50, (5, 11))
    mask = torch.ones_like(ids)
    assert model(ids, mask).shape == (5, 3)
    maps = model.attention_maps(ids, mask)
    assert len(maps) == 2 and all(m.shape == (5, 4, 11, 11) for m in maps)


@pytest.mark.parametrize("position,norm", CONFIGS)
def test_padding_does_not_change_a_texts_logits(position, norm):
    model = tiny(position, norm)
    ids = torch.randint(1, 50, (1, 7))
    alone = model(ids, torch.ones_like(ids))
    padded_ids = torch.cat([ids, torch.zeros(1, 9, dtype=torch.long)], dim=1)
    padded_mask = torch.cat([torch.ones(1, 7, dtype=torch.long), torch.zeros(1, 9, dtype=torch.long)], dim=1)
    padded = model(padded_ids, padded_mask)
    assert torch.allclose(alone, padded, atol=1e-5), (alone - padded).abs().max()


@pytest.mark.parametrize("position,norm", CONFIGS)
def test_attention_rows_sum_to_one_and_ignore_padding_keys(position, norm):
    model = tiny(position, norm)
    ids = torch.randint(1, 50, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # the second text has 5 real tokens and 4 padding tokens
    for weights in model.attention_maps(ids, mask):
        assert torch.allclose(weights.sum(-1), torch.ones(2, 4, 9), atol=1e-6)
        assert torch.all(weights[1, :, :, 5:] == 0)


def test_sinusoidal_positions_have_no_parameters_and_learned_ones_do():
    learned = {n for n, _ in tiny("learned", "pre").named_parameters()}
    sinusoidal = {n for n, _ in tiny("sinusoidal", "pre").named_parameters()}
    assert "encoder.embeddings.position.weight" in learned
    assert learned - sinusoidal == {"encoder.embeddings.position.weight"}
