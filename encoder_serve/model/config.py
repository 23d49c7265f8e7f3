"""Every choice of a training run, in three dataclasses, each default written once.

    EncoderConfig   the model: size, position kind, norm placement, labels (saved in every checkpoint)
    ModelOptions    how to build it: a pretrained start, or a from-scratch size (defaults: EncoderConfig's)
    TrainConfig     how to train it: optimisation, seed, distillation weights

Torch-free, so `encoder-serve --help` and `encoder-serve serve` read the defaults without importing torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

POSITION_KINDS = ("learned", "sinusoidal", "relative")
NORM_PLACEMENTS = ("pre", "post")


@dataclass
class EncoderConfig:
    vocab_size: int = 8000
    max_length: int = 128  # longest input the model accepts, [CLS] and [SEP] included
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 1024
    dropout: float = 0.1  # embeddings, sublayer outputs and the classification head
    attention_dropout: float = 0.1
    position: str = "learned"  # one of POSITION_KINDS
    norm: str = "post"  # one of NORM_PLACEMENTS; post-norm needs learning-rate warm-up
    layer_norm_eps: float = 1e-12
    type_vocab_size: int = 2  # BERT's segment embeddings (all zeros for one text); 0 drops them
    relative_buckets: int = 32  # T5-style bucketed relative positions (position == "relative")
    relative_max_distance: int = 128
    pad_token_id: int = 0
    pooler: bool = False  # BERT's pooler (dense + tanh on the first token) before the classifier
    labels: list[str] = field(default_factory=lambda: ["negative", "positive"])  # id -> label

    def __post_init__(self) -> None:
        if self.position not in POSITION_KINDS:
            raise ValueError(f"position must be one of {POSITION_KINDS}, got {self.position!r}")
        if self.norm not in NORM_PLACEMENTS:
            raise ValueError(f"norm must be one of {NORM_PLACEMENTS}, got {self.norm!r}")
        if self.d_model % self.n_heads != 0:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if len(self.labels) < 1 or len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels must be a non-empty list of distinct names, got {self.labels!r}")
        self.labels = [str(label) for label in self.labels]

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EncoderConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown encoder config fields: {sorted(unknown)}")
        return cls(**data)


PRETRAINED_LR = 8e-5  # the peak learning rate when --pretrained is given and --lr is not
AUGMENT_KINDS = ("dropout", "shuffle", "mix", "synonym")  # see distill.augment_texts
DEFAULT_AUGMENT_KINDS = ("dropout", "shuffle", "mix")


@dataclass
class ModelOptions:
    """How to build the model: a pretrained start, or a from-scratch size and architecture."""

    pretrained: str | None = None  # a BERT-family checkpoint directory, or "minilm"
    layers: int = EncoderConfig.n_layers
    d_model: int = EncoderConfig.d_model
    heads: int = EncoderConfig.n_heads
    d_ff: int = EncoderConfig.d_ff
    vocab_size: int = EncoderConfig.vocab_size
    max_length: int = EncoderConfig.max_length
    position: str = EncoderConfig.position
    norm: str = EncoderConfig.norm
    dropout: float = EncoderConfig.dropout  # attention dropout too
    embeddings_from: str | None = None  # an encoder-serve checkpoint or "minilm": its vocabulary and embeddings
    pooler: bool = EncoderConfig.pooler  # with --pretrained, the checkpoint's pooler weights are loaded


@dataclass
class TrainConfig:
    epochs: int = 5
    batch_size: int = 32
    lr: float = 5e-4  # from scratch; PRETRAINED_LR from a pretrained start
    weight_decay: float = 0.01
    warmup: float = 0.1  # fraction of all steps spent warming the learning rate up from 0
    patience: int = 3  # epochs without a better validation macro-F1 before stopping; 0 never stops early
    grad_clip: float = 1.0
    seed: int = 0
    threads: int = 2
    eval_batch_size: int = 128
    temperature: float = 2.0  # distillation only: softens teacher and student distributions
    alpha: float = 0.5  # distillation only: weight of the soft-target loss (1 - alpha on the hard labels)
    attention_distill: float = 0.0  # distillation only: weight of the last-layer attention and value relations
    hidden_distill: float = 0.0  # distillation only: weight of the last hidden states' MSE (learned projection)
