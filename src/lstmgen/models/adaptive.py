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

The module is torch's ``nn.AdaptiveLogSoftmaxWithLoss`` (div_value 4, a head bias), held as
``decoder``: its weights are ``decoder.head.*`` and ``decoder.tail.{c}.{0,1}.weight``
(``weight_shapes`` lists them without torch, for modeldir.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from torch import Tensor, nn

    from ..config import ModelConfig

DIV_VALUE = 4.0  # each tail's projection is H / 4^(c+1) wide (the paper's and torch's default)
IGNORE = -100  # F.cross_entropy's ignore_index (label_rows.py pads targets with it)


def weight_shapes(config: ModelConfig, in_features: int) -> dict[str, tuple[int, ...]]:
    """The head's weight names and shapes (torch-free), as the torch module names them."""
    cuts = [*config.adaptive_cutoffs, config.vocab_size]
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
    """Each tail's projection needs at least one unit: H / 4^C >= 1."""
    C = len(config.adaptive_cutoffs)
    if config.hidden_size // DIV_VALUE**C < 1:
        raise ConfigError(
            f"adaptive softmax with {C} cluster(s) needs hidden_size >= {int(DIV_VALUE**C)} "
            f"(the last tail is hidden_size / {int(DIV_VALUE**C)} wide), got {config.hidden_size}"
        )


def build(config: ModelConfig, in_features: int) -> nn.Module:
    from torch import nn

    check_width(config)
    head = nn.AdaptiveLogSoftmaxWithLoss(
        in_features, config.vocab_size, config.adaptive_cutoffs, DIV_VALUE, head_bias=True
    )
    nn.init.zeros_(head.head.bias)  # as the plain decoder's bias: loss near ln(V) at the start
    return head


def _head_dtype(head: nn.Module, x: Tensor) -> tuple[Tensor, Any]:
    """x in the head's weights' dtype and a context without autocast: torch's module writes
    each cluster's log-probs into a tensor of its input's dtype (index_copy_ refuses to mix the
    fp16 output of an autocast LSTM with float32 log-probs, and half precision would round
    them); so under autocast the small head runs in float32, its weights' dtype."""
    import torch

    return x.to(head.head.weight.dtype), torch.autocast(x.device.type, enabled=False)


def log_probs(head: nn.Module, x: Tensor) -> Tensor:
    """x (B, T, H) -> log-probabilities (B, T, V) of every word."""
    B, T, H = x.shape
    x, no_autocast = _head_dtype(head, x)
    with no_autocast:
        return head.log_prob(x.reshape(B * T, H)).view(B, T, -1)  # (B, T, V)


def loss(head: nn.Module, x: Tensor, targets: Tensor) -> Tensor:
    """Mean negative log-likelihood of ``targets`` (B, T) given x (B, T, H), targets equal to
    ``IGNORE`` left out (as F.cross_entropy does); only the clusters the targets fall in run."""
    H = x.shape[-1]
    t = targets.reshape(-1).long()  # (N,)
    keep = t != IGNORE  # (N,); a mask, not an index: no host sync
    x, no_autocast = _head_dtype(head, x)
    with no_autocast:
        out = head(x.reshape(-1, H), t.clamp(min=0)).output  # (N,) log-prob of each target
    return -(out * keep).sum() / keep.sum().clamp(min=1)


def refuse(config: ModelConfig, what: str) -> None:
    """One ``ConfigError`` where a tool that reads the decoder meets an adaptive model."""
    if config.adaptive_cutoffs:
        raise ConfigError(
            f"{what} does not support adaptive-softmax models (adaptive_cutoffs "
            f"{config.adaptive_cutoffs}): it needs the plain decoder"
        )
