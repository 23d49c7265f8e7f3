"""A transformer encoder classifier, written from scratch.

Reads top-down like the encoder chapter it comes from:

    EncoderConfig                 every choice in one dataclass (config.py: torch-free, so the CLI reads
                                  its defaults without importing torch)
    Embeddings                    token embeddings + position information
    RelativePositionBias          relative positions as a bias on the attention scores
    scaled_dot_product_attention  softmax(QK^T / sqrt(d_k) + mask) V
    MultiHeadAttention            per-head projections, heads concatenated, output projection
    FeedForward                   Linear -> GELU -> Linear
    EncoderLayer                  both sublayers with skip connections and layer norm (pre or post)
    Encoder                       embeddings + a stack of layers
    ClassificationHead            first token -> (pooler: dense + tanh) -> dropout -> linear
    EncoderClassifier             encoder + head; what we train, export and serve

Shapes are written where they change: B batch, T sequence length, C = d_model,
nh heads, hs = C // nh head size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from encoder_serve.model.config import NORM_PLACEMENTS, POSITION_KINDS, EncoderConfig  # noqa: F401 (re-exported)


def sinusoidal_table(n_positions: int, d_model: int) -> torch.Tensor:
    """The fixed sine/cosine pattern of "Attention Is All You Need": PE[p, 2i] = sin(p / 10000^(2i/C))."""
    position = torch.arange(n_positions, dtype=torch.float32).unsqueeze(1)  # (T, 1)
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(n_positions, d_model)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div[: d_model // 2])
    return table  # (T, C)


class Embeddings(nn.Module):
    """Token embeddings plus absolute position information, then layer norm and dropout (as in BERT).

    `learned` adds a trained position-index table, `sinusoidal` a fixed one (a buffer, no parameters);
    `relative` adds nothing here: relative positions enter the attention scores instead.
    With `sinusoidal`, token embeddings are multiplied by sqrt(C) as in Vaswani et al. (section 3.4): the
    fixed pattern has unit amplitude while tokens start at std 0.02, and unscaled, position drowns the
    token signal (measured: 2 layers, d=128, 6 epochs on emotion reached 84.8% against 89.5% learned).
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.position_kind = config.position
        self.token = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_token_id)
        if config.position == "learned":
            self.position = nn.Embedding(config.max_length, config.d_model)
        elif config.position == "sinusoidal":
            self.register_buffer("position_table", sinusoidal_table(config.max_length, config.d_model),
                                 persistent=False)
            self.token_scale = math.sqrt(config.d_model)
        self.token_type = nn.Embedding(config.type_vocab_size, config.d_model) if config.type_vocab_size else None
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        T = input_ids.shape[1]
        x = self.token(input_ids)  # (B, T, C)
        if self.position_kind == "learned":
            x = x + self.position.weight[:T]  # (T, C) broadcast over B
        elif self.position_kind == "sinusoidal":
            x = x * self.token_scale + self.position_table[:T]
        if self.token_type is not None:
            x = x + self.token_type.weight[0]  # one segment: type id 0 everywhere
        return self.dropout(self.norm(x))


class RelativePositionBias(nn.Module):
    """T5-style relative position bias (Raffel et al. 2020, section 2.1), bidirectional.

    The signed distance j - i between query i and key j is mapped to one of `relative_buckets` buckets:
    half for keys before the query, half after; within each half, small distances get a bucket each and
    larger ones share logarithmically wider buckets up to `relative_max_distance`. Every head learns one
    scalar per bucket, added to its attention scores. As in T5, one table is shared by all layers.
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.n_buckets = config.relative_buckets
        self.max_distance = config.relative_max_distance
        self.bias = nn.Embedding(config.relative_buckets, config.n_heads)

    def bucket(self, relative_position: torch.Tensor) -> torch.Tensor:
        half = self.n_buckets // 2
        bucket = (relative_position > 0).long() * half  # keys after the query use the upper half
        distance = relative_position.abs()
        max_exact = half // 2
        is_small = distance < max_exact
        # log-spaced buckets for distances in [max_exact, max_distance); clamp(min=1) keeps log finite
        log_ratio = torch.log(distance.float().clamp(min=1) / max_exact) / math.log(self.max_distance / max_exact)
        large = max_exact + (log_ratio * (half - max_exact)).long()
        large = torch.clamp(large, max=half - 1)
        return bucket + torch.where(is_small, distance, large)

    def forward(self, T: int, device: torch.device) -> torch.Tensor:
        position = torch.arange(T, device=device)
        relative = position[None, :] - position[:, None]  # (T, T): key j - query i
        bias = self.bias(self.bucket(relative))  # (T, T, nh)
        return bias.permute(2, 0, 1).unsqueeze(0)  # (1, nh, T, T)


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 bias: torch.Tensor, dropout: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(QK^T / sqrt(d_k) + bias) V for q, k, v of shape (B, nh, T, hs).

    `bias` is (B or 1, 1 or nh, T or 1, T): a large negative number on padding keys, plus the relative
    position bias when there is one. Returns the output (B, nh, T, hs) and the weights (B, nh, T, T).
    """
    d_k = q.shape[-1]
    scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(d_k)  # (B, nh, T, T)
    weights = F.softmax(scores + bias, dim=-1)  # each row sums to 1; padding keys get exp(-huge) = 0
    return torch.matmul(dropout(weights), v), weights  # (B, nh, T, hs), (B, nh, T, T)


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention.

    Each of the nh heads has its own query, key and value projection C -> hs; they are stored side by side
    in one C -> C linear layer per role (the same parameters as nh separate layers, one matrix product).
    Heads attend independently, are concatenated back to C and mixed by the output projection.
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.query = nn.Linear(config.d_model, config.d_model)
        self.key = nn.Linear(config.d_model, config.d_model)
        self.value = nn.Linear(config.d_model, config.d_model)
        self.output = nn.Linear(config.d_model, config.d_model)
        self.attention_dropout = nn.Dropout(config.attention_dropout)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        return x.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)  # (B, nh, T, hs)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, return_attention: bool = False,
                return_values: bool = False) -> tuple[torch.Tensor, torch.Tensor | tuple | None]:
        """The output (B, T, C), and the attention weights (B, nh, T, T) when asked; with `return_values`
        too, the pair (weights, value vectors (B, nh, T, hs)) that attention distillation matches."""
        B, T, C = x.shape
        q, k, v = self.split_heads(self.query(x)), self.split_heads(self.key(x)), self.split_heads(self.value(x))
        y, weights = scaled_dot_product_attention(q, k, v, bias, self.attention_dropout)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # heads concatenated: (B, T, C)
        if not return_attention:
            return self.output(y), None
        return self.output(y), ((weights, v) if return_values else weights)


class FeedForward(nn.Module):
    """Position-wise feed-forward: C -> d_ff -> C with GELU (the exact, erf-based one, as in BERT)."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.up = nn.Linear(config.d_model, config.d_ff)
        self.down = nn.Linear(config.d_ff, config.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class EncoderLayer(nn.Module):
    """Self-attention and feed-forward sublayers, each wrapped in a skip connection and layer norm.

    post-norm (the original Transformer, BERT): x = LN(x + Sublayer(x))
    pre-norm (more stable without warm-up):       x = x + Sublayer(LN(x))
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.pre_norm = config.norm == "pre"
        self.attention = MultiHeadAttention(config)
        self.attention_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.feed_forward = FeedForward(config)
        self.feed_forward_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, return_attention: bool = False,
                return_values: bool = False) -> tuple[torch.Tensor, torch.Tensor | tuple | None]:
        if self.pre_norm:
            a, weights = self.attention(self.attention_norm(x), bias, return_attention, return_values)
            x = x + self.dropout(a)
            x = x + self.dropout(self.feed_forward(self.feed_forward_norm(x)))
        else:
            a, weights = self.attention(x, bias, return_attention, return_values)
            x = self.attention_norm(x + self.dropout(a))
            x = self.feed_forward_norm(x + self.dropout(self.feed_forward(x)))
        return x, weights  # (B, T, C)


class Encoder(nn.Module):
    """Embeddings and a stack of encoder layers; returns the last hidden states (B, T, C)."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.relative_bias = RelativePositionBias(config) if config.position == "relative" else None
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.n_layers))
        # a pre-norm stack leaves its residual stream un-normalized: one final layer norm closes it
        self.final_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps) if config.norm == "pre" else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, return_attention: bool = False,
                return_values: bool = False) -> tuple[torch.Tensor, list]:
        """Last hidden states (B, T, C) and, with `return_attention`, every layer's attention weights
        (B, nh, T, T), or with `return_values` too, (weights, values (B, nh, T, hs)) pairs. The plain
        forward (the one exported to ONNX) keeps none of them."""
        _B, T = input_ids.shape
        x = self.embeddings(input_ids)  # (B, T, C)
        # 0 for real keys, the most negative float for padding keys: (B, 1, 1, T)
        bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        if self.relative_bias is not None:
            bias = bias + self.relative_bias(T, input_ids.device)  # (B, nh, T, T)
        attentions = []
        for layer in self.layers:
            x, weights = layer(x, bias, return_attention, return_values)
            if return_attention:
                attentions.append(weights)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x, attentions


class ClassificationHead(nn.Module):
    """Hidden state of the first token ([CLS]) -> dropout -> linear -> num_labels logits.

    With `config.pooler`, BERT's pooler (dense + tanh, pretrained with the next-sentence task) comes first,
    as in Hugging Face's BertForSequenceClassification.
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.pooler = nn.Linear(config.d_model, config.d_model) if config.pooler else None
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.d_model, config.num_labels)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        x = hidden[:, 0]  # (B, C)
        if self.pooler is not None:
            x = torch.tanh(self.pooler(x))
        return self.classifier(self.dropout(x))  # (B, num_labels)


class EncoderClassifier(nn.Module):
    """The encoder with its classification head. `config.labels[i]` names logit i."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.head = ClassificationHead(config)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # BERT's initialisation: N(0, 0.02) weights, zero biases, unit layer norms
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.encoder(input_ids, attention_mask)
        return self.head(hidden)  # (B, num_labels) logits

    @torch.no_grad()
    def attention_maps(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        """Attention weights of every layer, each (B, nh, T, T); the normal forward never keeps them."""
        _, attentions = self.encoder(input_ids, attention_mask, return_attention=True)
        return attentions

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
