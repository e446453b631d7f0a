"""Adaptive softmax for word models (Grave et al. 2017, "Efficient softmax approximation for
GPUs", arXiv:1609.04309): the recurrent stack's decoder when ``ModelConfig.adaptive_cutoffs``
is set.

Dimensions: N rows (B x T), H hidden, V vocabulary, S shortlist (the first cutoff), C clusters.

    x (N, H) -> head: (N, S + C) log-probs of the S frequent words and of each cluster
             -> tail c: (N, H) -> (N, H / 4^(c+1)) -> (N, V_c)   only for rows whose target
                                                                   falls in cluster c

At V = 33,278 (WikiText-2) a full decoder costs H x V per token forward and backward; with the
cutoffs [2000, 10000] most tokens stop at the head (the shortlist holds the frequent words) and
the rest pay for a low-rank tail. Training asks for the loss of the targets only (``loss``);
``log_probs`` gives the whole (N, V) distribution, which the model's ``forward`` returns as its
"logits": log-softmax of log-probabilities is the identity, so evaluation, scoring, sampling
and the server use it unchanged.

The clusters are id ranges, so they pay only when low ids are frequent words: the word
tokenizer numbers its vocabulary by frequency (``WordTokenizer.fit``: ``<eos>``, ``<unk>``,
then ``most_common``), PTB's and WikiText-2's included, so no permutation is needed.

The heads are in adaptive_heads.py, held as ``decoder``; both compute their log-softmaxes
in float32 and their matrix products as autocast says. Untied, it is torch's
``nn.AdaptiveLogSoftmaxWithLoss`` (div_value 4, a head bias): its weights are
``decoder.head.*`` and ``decoder.tail.{c}.{0,1}.weight`` (``weight_shapes`` lists them
without torch, for modeldir.py).

Tied (``tie_weights``), it is ``TiedAdaptiveSoftmax``: every word's output vector is its
embedding row (Press & Wolf 2017), as in the tied plain decoder, factored in two levels:

    x (N, E) -> head: [x W[:S]^T + b[:S], x U^T + u]    (N, S + C) log-probs
             -> tail c: x W[lo:hi]^T + b[lo:hi]          (N, V_c) only for rows in cluster c

W (V, E) is the embedding, b (V,) a bias per word, U (C, E) and u (C,) the cluster rows. The
tails are full rank (E wide, no H / 4^c projection): each rare word keeps the vector its
embedding learns from the input side, which the low-rank tails of the untied module cannot
share. Its own weights are ``decoder.bias`` and ``decoder.cluster.{weight,bias}``; its
``decoder.weight`` is the embedding, stored once (checkpoint.weights_of).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from torch import Tensor, nn

    from ..config import ModelConfig

DIV_VALUE = 4.0  # each tail's projection is H / 4^(c+1) wide (the paper's and torch's default)
IGNORE = -100  # F.cross_entropy's ignore_index (label_rows.py pads targets with it)


# "auto" (ModelConfig.adaptive_cutoffs, --preset word-cpu): a 2,000-word shortlist and a
# second cluster ending at half the vocabulary, within [3,000, 10,000]: the measured winners on
# PTB (V = 10,000: 2000,5000, word_quality_cpu_adaptive_ptb_bf16.json) and WikiText-2
# (V = 33,278: 2000,10000, word_quality_cpu_adaptive_wt2.json). Up to AUTO_MIN_VOCAB words the
# plain decoder costs little and is kept.
AUTO_SHORTLIST, AUTO_SECOND, AUTO_MIN_VOCAB = 2000, (3000, 10000), 4000


def auto_cutoffs(vocab_size: int) -> list[int]:
    """The cutoffs "auto" stands for at ``vocab_size`` words ([] = the plain decoder)."""
    if vocab_size <= AUTO_MIN_VOCAB:
        return []
    low, high = AUTO_SECOND
    return [AUTO_SHORTLIST, min(high, max(low, vocab_size // 2))]


def weight_shapes(config: ModelConfig, in_features: int) -> dict[str, tuple[int, ...]]:
    """The head's weight names and shapes (torch-free), as the modules name them; the tied
    head's ``decoder.weight`` is the embedding's, not stored."""
    cuts = [*config.adaptive_cutoffs, config.vocab_size]
    if config.tie_weights:
        C = len(cuts) - 1
        return {
            "decoder.bias": (config.vocab_size,),
            "decoder.cluster.weight": (C, in_features),  # (C, E)
            "decoder.cluster.bias": (C,),
        }
    shapes: dict[str, tuple[int, ...]] = {
        "decoder.head.weight": (cuts[0] + len(cuts) - 1, in_features),  # (S + C, H)
        "decoder.head.bias": (cuts[0] + len(cuts) - 1,),
    }
    for c in range(len(cuts) - 1):
        hsz = int(in_features // DIV_VALUE ** (c + 1))
        shapes[f"decoder.tail.{c}.0.weight"] = (hsz, in_features)  # (H_c, H)
        shapes[f"decoder.tail.{c}.1.weight"] = (cuts[c + 1] - cuts[c], hsz)  # (V_c, H_c)
    return shapes


def check_width(config: ModelConfig) -> None:
    """Each tail's projection needs at least one unit: H / 4^C >= 1 (the tied head's tails
    are E wide)."""
    C = len(config.adaptive_cutoffs)
    if not config.tie_weights and config.hidden_size // DIV_VALUE**C < 1:
        raise ConfigError(
            f"adaptive softmax with {C} cluster(s) needs hidden_size >= {int(DIV_VALUE**C)} "
            f"(the last tail is hidden_size / {int(DIV_VALUE**C)} wide), got {config.hidden_size}"
        )


def build(config: ModelConfig, in_features: int) -> nn.Module:
    """The head (adaptive_heads.py); the tied one gets its ``weight`` (the embedding) from
    the architecture."""
    from torch import nn

    from .adaptive_heads import TiedAdaptiveSoftmax, UntiedAdaptiveSoftmax

    check_width(config)
    if config.tie_weights:
        return TiedAdaptiveSoftmax(config.vocab_size, config.adaptive_cutoffs, in_features)
    head = UntiedAdaptiveSoftmax(
        in_features, config.vocab_size, config.adaptive_cutoffs, DIV_VALUE, head_bias=True
    )
    nn.init.zeros_(head.head.bias)  # as the plain decoder's bias: loss near ln(V) at the start
    return head


def log_probs(head: nn.Module, x: Tensor) -> Tensor:
    """x (B, T, D) -> float32 log-probabilities (B, T, V) of every word."""
    B, T, D = x.shape
    return head.log_prob(x.reshape(B * T, D)).view(B, T, -1)  # (B, T, V)


def loss(head: nn.Module, x: Tensor, targets: Tensor) -> Tensor:
    """Mean negative log-likelihood of ``targets`` (B, T) given x (B, T, D), targets equal to
    ``IGNORE`` left out (as F.cross_entropy does); only the clusters the targets fall in run."""
    t = targets.reshape(-1).long()  # (N,)
    keep = t != IGNORE  # (N,); a mask, not an index: no host sync
    out = head.target_log_probs(x.reshape(-1, x.shape[-1]), t.clamp(min=0))  # (N,)
    return -(out * keep).sum() / keep.sum().clamp(min=1)


def refuse(config: ModelConfig, what: str) -> None:
    """One ``ConfigError`` where a tool that reads the decoder meets an adaptive model."""
    if config.adaptive_cutoffs:
        raise ConfigError(
            f"{what} does not support adaptive-softmax models (adaptive_cutoffs "
            f"{config.adaptive_cutoffs}): it needs the plain decoder"
        )
