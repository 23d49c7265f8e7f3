"""Knowledge distillation: a small student learns what a teacher knows, not only the right answers.

    soft_target_loss     Hinton et al. (2015): the teacher's whole output distribution, softened by T
    augment_texts        perturbed copies of the training texts, labelled by the teacher only
    Teacher              one checkpoint or an ensemble (logits averaged); its outputs cached per text
    word_groups          where two tokenizations meet: [CLS], then whole words, then the rest
    relations            MiniLM's self-attention distributions and value relations, per relation head
    relation_loss        KL(teacher || student) per head and row, at word level
    hidden_loss          last hidden states through a learned projection (MSE), at word level

Output distillation: soften both distributions with a temperature T and minimise their KL divergence,
scaled by T^2 so its gradients keep the size of the hard-label loss's; the student gets the teacher's
"dark knowledge" (that a fearful tweet looks a little like a sad one) besides the right answer.

Self-attention distillation (MiniLM, Wang et al. 2020): the student's last-layer attention distributions
and value relations (softmax of scaled value-value dot products) match the teacher's. Teacher and student
may differ in width, heads and vocabulary: the teacher's heads are averaged in groups down to the student's
head count, value vectors are re-split into that many relation heads on both sides (as in MiniLMv2), and
every T x T matrix is pooled to words (rows averaged over a word's tokens, columns summed), which both
tokenizers share when they split words the same way (BERT's pre-tokenizer does for both ours).

The teacher runs once per text: logits, and the word-level relations and hidden states when asked, are
cached as safetensors in the teacher's directory, keyed by a hash of (teacher weights, text), so a new
augmentation set or another student only labels texts the teacher has not seen.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tokenizers import Encoding, Tokenizer

from encoder_serve.model.config import AUGMENT_KINDS, DEFAULT_AUGMENT_KINDS

CACHE_DIR = "teacher_cache"


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                     temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over the batch."""
    log_student = F.log_softmax(student_logits / temperature, dim=-1)
    teacher = F.softmax(teacher_logits / temperature, dim=-1)
    return F.kl_div(log_student, teacher, reduction="batchmean") * temperature ** 2


# ---------------------------------------------------------------------------------------------- augmentation

def word_dropout(words: list[str], rng: random.Random, p: float = 0.15) -> list[str]:
    kept = [w for w in words if rng.random() >= p]
    return kept or words


def span_shuffle(words: list[str], rng: random.Random, max_span: int = 5) -> list[str]:
    if len(words) < 3:
        return words
    n = rng.randint(2, min(max_span, len(words)))
    start = rng.randrange(len(words) - n + 1)
    span = words[start: start + n]
    rng.shuffle(span)
    return words[:start] + span + words[start + n:]


def mix(words: list[str], other: list[str], rng: random.Random) -> list[str]:
    """The first half of one text joined to the second half of another: a text between two labels."""
    return words[: max(1, len(words) // 2)] + other[len(other) // 2:]


def synonym_swap(words: list[str], neighbours: dict[str, list[str]], rng: random.Random,
                 p: float = 0.2) -> list[str]:
    """Replace about `p` of the words that have neighbours by one of their nearest neighbours."""
    out = [rng.choice(neighbours[w]) if w in neighbours and rng.random() < p else w for w in words]
    return out


def embedding_neighbours(texts: list[str], tokenizer: Tokenizer, embeddings: torch.Tensor,
                         k: int = 4, min_similarity: float = 0.5) -> dict[str, list[str]]:
    """For every word of `texts` that is one whole token of the teacher's vocabulary, its `k` nearest whole-word
    tokens by cosine similarity of the teacher's (fine-tuned) input embeddings: mostly inflections, spelling
    variants and near-synonyms (`hated` -> `hate`, `hateful`), which keep a text's meaning."""
    vocab = tokenizer.get_vocab()
    is_word = re.compile(r"^[a-z]{3,}$")
    candidates = sorted((t, i) for t, i in vocab.items() if is_word.match(t))
    words = sorted({w for text in texts for w in text.split() if w in vocab and is_word.match(w)})
    if not words or not candidates:
        return {}
    table = F.normalize(embeddings[[i for _, i in candidates]].float(), dim=-1)  # (V, C)
    query = F.normalize(embeddings[[vocab[w] for w in words]].float(), dim=-1)  # (W, C)
    out = {}
    for start in range(0, len(words), 1024):
        sims = query[start: start + 1024] @ table.T  # (chunk, V)
        top = sims.topk(k + 1, dim=-1)
        for row, word in enumerate(words[start: start + 1024]):
            near = [candidates[j][0] for s, j in zip(top.values[row].tolist(), top.indices[row].tolist())
                    if s >= min_similarity and candidates[j][0] != word][:k]
            if near:
                out[word] = near
    return out


def augment_texts(texts: list[str], copies: int, seed: int = 0, kinds: tuple[str, ...] = DEFAULT_AUGMENT_KINDS,
                  neighbours: dict[str, list[str]] | None = None) -> list[str]:
    """`copies` perturbed versions of every text (seeded), each made by one of `kinds` drawn at random."""
    unknown = set(kinds) - set(AUGMENT_KINDS)
    if unknown or not kinds:
        raise ValueError(f"augmentation kinds must be among {AUGMENT_KINDS}, got {list(kinds)}")
    if "synonym" in kinds and neighbours is None:
        raise ValueError("the synonym augmentation needs the teacher's embedding neighbours")
    rng = random.Random(seed)
    out = []
    for _ in range(copies):
        for text in texts:
            words = text.split()
            kind = kinds[rng.randrange(len(kinds))] if len(kinds) > 1 else kinds[0]
            if kind == "dropout":
                words = word_dropout(words, rng)
            elif kind == "shuffle":
                words = span_shuffle(words, rng)
            elif kind == "mix":
                words = mix(words, texts[rng.randrange(len(texts))].split(), rng)
            else:
                words = synonym_swap(words, neighbours, rng)
            out.append(" ".join(words))
    return out


# --------------------------------------------------------------------------------- word-level alignment

def word_groups(encoding: Encoding, max_words: int | None = None) -> list[int]:
    """A group per token: 0 for [CLS], 1..W for the first W words, W + 1 for the rest ([SEP], later words).

    W is the number of words the encoding kept, or `max_words` if smaller, so two tokenizations of the same
    text can be cut to the words both kept."""
    word_ids = encoding.word_ids
    n_words = len({w for w in word_ids if w is not None})
    W = n_words if max_words is None else min(n_words, max_words)
    groups = []
    for position, word in enumerate(word_ids):
        if word is None:
            groups.append(0 if position == 0 else W + 1)
        else:
            groups.append(word + 1 if word < W else W + 1)
    return groups


def pooling_matrices(groups: list[list[int]], T: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For a batch of texts' token groups: rows (B, G, T) averaging each group's tokens, columns (B, G + 1, T)
    summing them (the last column gathers every text's "rest"), and the valid-row mask (B, G).
    G = 1 + the most words of any text in the batch."""
    g = torch.full((len(groups), T), -1, dtype=torch.long)  # -1: padding
    for b, text in enumerate(groups):
        g[b, : len(text)] = torch.tensor(text)
    rest = g.max(1).values  # (B,): each text's rest group, W + 1
    G = int(rest.max())
    is_rest = g == rest[:, None]
    is_group = (g >= 0) & ~is_rest
    cols = F.one_hot(torch.where(is_rest, G, g.clamp(min=0)), G + 1).transpose(1, 2).float()
    cols = cols * (g >= 0)[:, None, :]
    rows = F.one_hot(torch.where(is_group, g, G), G + 1)[..., :G].transpose(1, 2).float()
    rows = rows / rows.sum(-1, keepdim=True).clamp(min=1.0)
    valid = torch.arange(G)[None, :] < rest[:, None]
    return rows, cols, valid


def group_heads(weights: torch.Tensor, n_groups: int) -> torch.Tensor:
    """(B, nh, T, T) attention distributions averaged in `n_groups` groups of consecutive heads."""
    B, nh, T, _ = weights.shape
    if nh % n_groups:
        raise ValueError(f"{nh} teacher heads cannot be averaged into {n_groups} student heads")
    return weights.view(B, n_groups, nh // n_groups, T, T).mean(2)


def value_relation(values: torch.Tensor, key_mask: torch.Tensor, n_heads: int) -> torch.Tensor:
    """MiniLM's value relation softmax(V V^T / sqrt(d_r)) with the values re-split into `n_heads` heads.

    values (B, nh, T, hs) -> (B, T, nh * hs) -> (B, n_heads, T, d_r); padding keys get no weight."""
    B, nh, T, hs = values.shape
    v = values.transpose(1, 2).reshape(B, T, nh * hs)
    d_r = nh * hs // n_heads
    v = v.view(B, T, n_heads, d_r).transpose(1, 2)  # (B, n_heads, T, d_r)
    scores = v @ v.transpose(-2, -1) / math.sqrt(d_r)  # (B, n_heads, T, T)
    scores = scores.masked_fill(~key_mask[:, None, None, :].bool(), torch.finfo(scores.dtype).min)
    return F.softmax(scores, dim=-1)


def relations(weights: torch.Tensor, values: torch.Tensor, attention_mask: torch.Tensor, n_heads: int,
              groups: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Word-level attention distributions and value relations (B, n_heads, G, G + 1), and the valid rows."""
    rows, cols, valid = pooling_matrices(groups, weights.shape[-1])
    rows, cols = rows.to(weights.dtype)[:, None], cols.to(weights.dtype)[:, None]  # broadcast over heads

    def pool(matrix: torch.Tensor) -> torch.Tensor:
        return rows @ matrix @ cols.transpose(-2, -1)  # (B, h, G, T) @ (B, h, T, T) @ (B, h, T, G + 1)

    return pool(group_heads(weights, n_heads)), pool(value_relation(values, attention_mask, n_heads)), valid


def relation_loss(student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) of each row distribution, averaged over heads and the valid rows."""
    kl = (torch.xlogy(teacher, teacher) - teacher * torch.log(student.clamp(min=1e-9))).sum(-1)  # (B, h, G)
    mask = valid[:, None, :].expand_as(kl)
    return kl[mask].mean()


def pool_hidden(hidden: torch.Tensor, groups: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, C) token states -> (B, G, C) word states (mean over each word's tokens), and the valid rows."""
    rows, _, valid = pooling_matrices(groups, hidden.shape[1])
    return rows.to(hidden.dtype) @ hidden, valid


def hidden_loss(student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean squared error between projected student and teacher word states, over the valid rows."""
    return F.mse_loss(student[valid], teacher[valid])


# ---------------------------------------------------------------------------------------------- the teacher

@dataclass
class Internals:
    """One text's word-level teacher targets: W words; attention and value relations (h, W + 1, W + 2)
    (the last column is the rest: [SEP] and words the teacher cut off); hidden states (W + 1, C_teacher)."""

    words: int
    attention: torch.Tensor
    values: torch.Tensor
    hidden: torch.Tensor

    def cut(self, words: int) -> Internals:
        """The same targets for the first `words` words only (a student that kept fewer words)."""
        if words >= self.words:
            return self
        G = words + 1

        def cut(matrix: torch.Tensor) -> torch.Tensor:
            return torch.cat([matrix[:, :G, :G], matrix[:, :G, G:].sum(-1, keepdim=True)], dim=-1)

        return Internals(words, cut(self.attention), cut(self.values), self.hidden[:G])


def text_keys(texts: list[str]) -> list[bytes]:
    return [hashlib.sha256(t.encode("utf-8")).digest() for t in texts]


def weights_digest(checkpoint: Path) -> str:
    digest = hashlib.sha256()
    with open(checkpoint / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


class TeacherCache:
    """A teacher's outputs per text, in shards `teacher_cache/WEIGHTS-KIND-ID.safetensors` inside its directory:
    `keys` (N, 32) SHA-256 of each text, `logits` (N, L), and for relations (KIND `relations-hH`) the word
    counts and the flattened float16 matrices. Only texts not yet cached are ever computed. Each shard gets
    a name no other writer picks and appears whole (written under a temporary name, then renamed), so
    trainings running at once can share a teacher: at worst two of them label the same new texts."""

    def __init__(self, checkpoint: Path, kind: str):
        self.dir = checkpoint / CACHE_DIR
        self.prefix = f"{weights_digest(checkpoint)}-{kind}-"

    def shards(self) -> list[Path]:
        return sorted(self.dir.glob(f"{self.prefix}*.safetensors"))

    def load(self) -> dict[bytes, dict[str, torch.Tensor]]:
        found: dict[bytes, dict[str, torch.Tensor]] = {}
        for shard in self.shards():
            tensors = load_file(str(shard))
            keys = tensors.pop("keys").numpy()
            split = unflatten(tensors, len(keys))
            for i, key in enumerate(keys):
                found[key.tobytes()] = split[i]
        return found

    def add(self, keys: list[bytes], rows: list[dict[str, torch.Tensor]]) -> None:
        if not keys:
            return
        self.dir.mkdir(exist_ok=True)
        tensors = flatten(rows)
        tensors["keys"] = torch.from_numpy(np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 32).copy())
        name = f"{self.prefix}{time.time_ns():x}-{os.getpid()}.safetensors"
        partial = self.dir / f".{name}.partial"
        save_file(tensors, str(partial))
        os.replace(partial, self.dir / name)


def flatten(rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Per-text tensors of any shape -> one flat tensor per name, with each text's shape beside it."""
    out = {}
    for name in rows[0]:
        out[name] = torch.cat([r[name].reshape(-1) for r in rows]).contiguous()
        shapes = [list(r[name].shape) for r in rows]
        out[f"{name}.shape"] = torch.tensor(shapes, dtype=torch.int64).reshape(len(rows), -1)
    return out


def unflatten(tensors: dict[str, torch.Tensor], n: int) -> list[dict[str, torch.Tensor]]:
    rows: list[dict[str, torch.Tensor]] = [{} for _ in range(n)]
    for name in [k for k in tensors if not k.endswith(".shape")]:
        shapes, flat, offset = tensors[f"{name}.shape"].tolist(), tensors[name], 0
        for i, shape in enumerate(shapes):
            size = math.prod(shape)
            rows[i][name] = flat[offset: offset + size].view(shape)
            offset += size
    return rows


class Teacher:
    """One or several fine-tuned checkpoints with the same labels. An ensemble's soft targets are its members'
    logits averaged; relations and hidden states (for attention and hidden-state distillation) come from the
    first member."""

    def __init__(self, checkpoints: list[str | Path], labels: list[str], threads: int, batch_size: int = 128):
        from encoder_serve.model.checkpoint import load_checkpoint

        self.paths = [Path(c) for c in checkpoints]
        self.members = [load_checkpoint(p)[:2] for p in self.paths]
        for path, (model, _) in zip(self.paths, self.members):
            if model.config.labels != labels:
                raise ValueError(f"teacher {path} predicts labels {model.config.labels}, the data has {labels}: "
                                 "train the teacher on the same label set")
        self.threads, self.batch_size = threads, batch_size

    @property
    def model(self):
        return self.members[0][0]

    @property
    def tokenizer(self) -> Tokenizer:
        return self.members[0][1]

    def logits(self, texts: list[str]) -> torch.Tensor:
        """(N, num_labels): the members' logits averaged, each member's cached per text."""
        return torch.stack([self._cached(i, texts, None) for i in range(len(self.members))]).mean(0)

    def internals(self, texts: list[str], n_heads: int) -> list[Internals]:
        """The first member's word-level relations (`n_heads` relation heads) and hidden states per text."""
        rows = self._cached(0, texts, n_heads)
        return [Internals(int(r["words"]), r["attention"], r["values"], r["hidden"]) for r in rows]  # float16

    def _cached(self, member: int, texts: list[str], n_heads: int | None):
        path = self.paths[member]
        cache = TeacherCache(path, "logits" if n_heads is None else f"relations-h{n_heads}")
        found = cache.load()
        keys = text_keys(texts)
        missing = sorted({k: i for i, k in enumerate(keys) if k not in found}.values())  # one per distinct text
        distinct = len(set(keys))
        print(f"teacher {path}: {distinct - len(missing)} of {distinct} distinct texts cached"
              + (f", labelling {len(missing)} ..." if missing else ""), file=sys.stderr)
        if missing:
            torch.set_num_threads(self.threads)
            new = self._compute(member, [texts[i] for i in missing], n_heads)
            cache.add([keys[i] for i in missing], new)
            found.update({keys[i]: row for i, row in zip(missing, new)})
        rows = [found[k] for k in keys]
        return torch.stack([r["logits"] for r in rows]) if n_heads is None else rows

    @torch.no_grad()
    def _compute(self, member: int, texts: list[str], n_heads: int | None) -> list[dict[str, torch.Tensor]]:
        from encoder_serve.model.train import collate

        model, tokenizer = self.members[member]
        model.eval()
        encodings = tokenizer.encode_batch(texts)
        pad = tokenizer.token_to_id("[PAD]") or 0
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        out: list[dict[str, torch.Tensor]] = [{} for _ in texts]
        for start in range(0, len(order), self.batch_size):
            chunk = order[start: start + self.batch_size]
            ids, mask = collate([encodings[i].ids for i in chunk], pad)
            if n_heads is None:
                for i, row in zip(chunk, model(ids, mask)):
                    out[i] = {"logits": row.clone()}
                continue
            hidden, layers = model.encoder(ids, mask, return_attention=True, return_values=True)
            weights, values = layers[-1]
            groups = [word_groups(encodings[i]) for i in chunk]
            attention, value_rel, _ = relations(weights, values, mask, n_heads, groups)
            word_hidden, _ = pool_hidden(hidden, groups)
            for b, i in enumerate(chunk):
                W = max(groups[b]) - 1
                G = W + 1
                keep = list(range(G)) + [attention.shape[-1] - 1]  # the words, then the rest column
                out[i] = {"words": torch.tensor(W),
                          "attention": attention[b, :, :G, keep].half().contiguous(),
                          "values": value_rel[b, :, :G, keep].half().contiguous(),
                          "hidden": word_hidden[b, :G].half().contiguous()}
        return out


def check_same_words(student: Tokenizer, teacher: Tokenizer, texts: list[str]) -> None:
    """Word-level distillation needs both tokenizers to split texts into the same words."""
    for text in texts[:200]:
        a = student.pre_tokenizer.pre_tokenize_str(student.normalizer.normalize_str(text)) \
            if student.pre_tokenizer and student.normalizer else None
        b = teacher.pre_tokenizer.pre_tokenize_str(teacher.normalizer.normalize_str(text)) \
            if teacher.pre_tokenizer and teacher.normalizer else None
        if a is None or b is None or [w for w, _ in a] != [w for w, _ in b]:
            raise ValueError("attention and hidden-state distillation need the student's and the teacher's "
                             f"tokenizers to split texts into the same words; they differ on {text!r}")


def batch_targets(internals: list[Internals], G: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Teacher targets of a batch padded to the student's G rows: relations (B, h, G, G + 1) with every
    text's rest in the last column, and hidden states (B, G, C_teacher)."""
    h, C = internals[0].attention.shape[0], internals[0].hidden.shape[-1]
    attention = torch.zeros(len(internals), h, G, G + 1)
    values = torch.zeros_like(attention)
    hidden = torch.zeros(len(internals), G, C)
    for b, target in enumerate(internals):
        n = target.words + 1
        for out, matrix in ((attention, target.attention), (values, target.values)):
            out[b, :, :n, :n] = matrix[:, :, :n]
            out[b, :, :n, G] = matrix[:, :, n]
        hidden[b, :n] = target.hidden
    return attention, values, hidden
