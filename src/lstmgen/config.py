"""Typed configuration saved next to the weights.

``ModelConfig`` is what the network *is*, ``TrainConfig`` how it was trained and
``GenerationConfig`` how to decode from it (the split Hugging Face uses). All three read and write
JSON; an unknown key is an error, never silently ignored, and every value is checked against its
field's type (a hand-edited ``"hidden_size": 32.5`` is one clear error, not a traceback from
deep inside PyTorch).
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError
from .files import read_json

T = TypeVar("T", bound="_JsonConfig")

CELLS = ("lstm", "gru", "rnn")
TOKENIZERS = ("char", "byte", "word", "bpe")
PRECISIONS = ("auto", "bf16", "fp32")
LABEL_SOURCES = ("", "folders", "jsonl")
OPTIMIZERS = ("adamw", "nt-asgd")
# AWD-LSTM's regularisers (Merity et al. 2017, "Regularizing and Optimizing LSTM Language
# Models"): options of the recurrent architecture only (models/recurrent.py applies them).
AWD_MODEL_OPTIONS = (
    "weight_drop",
    "dropout_input",
    "dropout_hidden",
    "dropout_output",
    "dropout_embedding",
)
# Model settings that only act in training: a run fine-tuned from a base model may set them
# (the base's weights do not depend on them); every other model setting comes from the base.
REGULARISERS = ("dropout", *AWD_MODEL_OPTIONS)


def _show(value: Any) -> str:
    """A value as it would look in the JSON file (``null``, ``"32"``, ``true``)."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _wanted(hint: Any, value: Any) -> str | None:
    """What the annotation ``hint`` asks for, if ``value`` does not fit it (else None). JSON has
    one number type, so ints and floats are told apart here: an int field takes ints only (not
    bool, not 32.5), a float field ints or floats, and neither NaN nor infinity."""
    args = typing.get_args(hint)
    if type(None) in args:  # X | None
        inner = next(a for a in args if a is not type(None))
        want = _wanted(inner, value)
        return f"{want} or null" if want and value is not None else None
    if isinstance(hint, types.UnionType):  # X | Y: either will do
        wants = [_wanted(a, value) for a in args]
        return None if None in wants else " or ".join(w for w in wants if w)
    if hint is bool:
        ok, want = isinstance(value, bool), "true or false"
    elif hint is int:
        ok, want = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok, want = ok and math.isfinite(value), "a finite number"
    elif hint is str:
        ok, want = isinstance(value, str), "a string"
    elif typing.get_origin(hint) is list and typing.get_args(hint) == (str,):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        want = "a list of strings"
    elif typing.get_origin(hint) is list and typing.get_args(hint) == (int,):
        ok = isinstance(value, list) and all(_wanted(int, v) is None for v in value)
        want = "a list of integers"
    else:  # a new kind of annotation needs a rule here
        raise TypeError(f"no type check for {hint}")
    return None if ok else want


class _JsonConfig:
    """Mixin: dict/JSON round trip with unknown keys rejected and values validated."""

    def validate(self) -> None:
        """Types first (so the range checks can compare), then ``check_values``."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            want = _wanted(hints[f.name], value)
            if want:
                raise ConfigError(f"{f.name} must be {want}, got {_show(value)}")
        self.check_values()

    def check_values(self) -> None:  # overridden where there is something to check
        pass

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown key(s) {', '.join(unknown)}")
        obj = cls(**data)
        obj.validate()
        return obj

    def replace(self: T, **changes: Any) -> T:
        obj = dataclasses.replace(self, **changes)  # type: ignore[type-var]
        obj.validate()
        return obj

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json_file(cls: type[T], path: str | Path) -> T:
        return cls.from_dict(read_json(path))


def _is_text_encoding(name: str) -> bool:
    """Whether Python can decode text in ``name`` (``base64`` is a codec, but not for text)."""
    try:
        return getattr(codecs.lookup(name), "_is_text_encoding", True)
    except LookupError:
        return False


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


@dataclass
class ModelConfig(_JsonConfig):
    """The network: embedding -> recurrent stack -> dropout -> linear decoder."""

    vocab_size: int = 0
    cell: str = "lstm"  # lstm | gru | rnn (tanh)
    embedding_size: int = 64
    hidden_size: int = 384
    num_layers: int = 2
    dropout: float = 0.0
    tie_weights: bool = False  # decoder shares the embedding matrix (projects H -> E if needed)
    # the architecture, a name in models/registry.py (checked there when a model is built or a
    # model directory read); config.json files written before issue #11 have none: the default
    arch: str = "recurrent"
    # arch "sha-lstm" only (models/attention.py, issue #12): past positions the attention head
    # sees beyond the window, the layer it follows (negative: from the end) and the width of its
    # feed-forward sublayer (0 = none). Other architectures keep the defaults and do not write
    # them to config.json, so code from before issue #12 still reads their config.json.
    memory: int = 512
    attention_layer: int = -2
    boom_size: int = 0
    # length F of the feature vector each document carries (issue #13; 0 = none): the model maps
    # it to its initial state (models/recurrent.py, Show and Tell's image-to-state)
    feature_size: int = 0
    # AWD-LSTM regularisers (issue #16), all off by default; only while training.
    weight_drop: float = 0.0  # DropConnect on every layer's weight_hh, one mask per forward
    dropout_input: float = 0.0  # locked (variational) dropout on the embeddings' output
    dropout_hidden: float = 0.0  # locked dropout between recurrent layers
    dropout_output: float = 0.0  # locked dropout on the last layer's output, before the decoder
    dropout_embedding: float = 0.0  # drop whole words: rows of the embedding matrix
    # Adaptive softmax (Grave et al. 2017, models/adaptive.py; empty = the plain decoder): the
    # ids where the frequent-word shortlist and each rarer cluster end, e.g. [2000, 10000]. The
    # word tokenizer numbers words by frequency, so low ids are the frequent words. "auto":
    # chosen from the vocabulary when a run is created (adaptive.auto_cutoffs).
    adaptive_cutoffs: list[int] | str = field(default_factory=list)

    def check_values(self) -> None:
        _check(self.feature_size >= 0, "feature_size must be >= 0")
        _check(self.cell in CELLS, f"cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        for name in AWD_MODEL_OPTIONS:
            p = getattr(self, name)
            _check(0.0 <= p < 1.0, f"{name} must be in [0, 1), got {p:g}")
            _check(
                p == 0.0 or self.arch == "recurrent",
                f"{name} is an option of the recurrent architecture, not of arch {self.arch!r}",
            )
        _check(self.vocab_size >= 0, "vocab_size must be >= 0")
        _check(self.embedding_size > 0, "embedding_size must be > 0")
        _check(self.hidden_size > 0, "hidden_size must be > 0")
        _check(self.num_layers > 0, "num_layers must be > 0")
        _check(0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)")
        if self.adaptive_cutoffs:
            self._check_adaptive()
        if self.arch == "sha-lstm":
            self._check_attention()
        else:
            for name in ATTENTION_FIELDS:
                default = ModelConfig.__dataclass_fields__[name].default
                _check(
                    getattr(self, name) == default,
                    f"{name} applies to arch sha-lstm only (arch is {self.arch!r})",
                )

    def _check_adaptive(self) -> None:
        cuts = self.adaptive_cutoffs
        _check(
            self.arch == "recurrent",
            f"adaptive_cutoffs is an option of the recurrent architecture, not of arch "
            f"{self.arch!r}",
        )
        if isinstance(cuts, str):  # a rule until the vocabulary is known (Trainer.create)
            _check(
                cuts == "auto", f'adaptive_cutoffs must be a list of ids or "auto", got {cuts!r}'
            )
            _check(
                not self.vocab_size,
                'adaptive_cutoffs "auto" is chosen when a run is created from a corpus; a model '
                "of a known vocabulary needs the cutoffs themselves",
            )
            return
        _check(
            all(a < b for a, b in zip([0, *cuts], cuts, strict=False)),
            f"adaptive_cutoffs must be increasing positive ids, got {_show(cuts)}",
        )
        _check(
            not self.vocab_size or cuts[-1] < self.vocab_size,
            f"adaptive_cutoffs must be below the vocabulary size {self.vocab_size:,}, got "
            f"{_show(cuts)}",
        )

    def _check_attention(self) -> None:
        L, M, H = self.num_layers, self.memory, self.hidden_size
        _check(self.cell == "lstm", f"arch sha-lstm needs cell lstm, got {self.cell!r}")
        _check(M >= 1, f"memory must be >= 1 (tokens the attention head sees), got {M}")
        row = M * H * 4  # float32 bytes of one sequence's memory (models/attention.py)
        _check(
            row <= MAX_MEMORY_BYTES_PER_ROW,
            f"memory {M:,} x hidden_size {H:,} x 4 bytes = {row / 2**30:.1f} GiB per sequence, "
            f"more than the {MAX_MEMORY_BYTES_PER_ROW / 2**30:.0f} GiB that fit: lower --memory",
        )
        # negative counts from the end (resolved % L: the default -2 is layer 0 of one layer)
        low = -max(L, 2)
        _check(
            low <= self.attention_layer < L,
            f"attention_layer must be in [{low}, {L - 1}] for {L} layer(s), got "
            f"{self.attention_layer}",
        )
        _check(self.boom_size >= 0, f"boom_size must be >= 0 (0 = none), got {self.boom_size}")

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        if self.arch != "sha-lstm":  # older code refuses keys it does not know
            for name in ATTENTION_FIELDS:
                del data[name]
        if not self.feature_size:  # likewise: only a feature model's config.json names it
            del data["feature_size"]
        for name in AWD_MODEL_OPTIONS:  # and only a regularised model's names its regularisers
            if not data[name]:
                del data[name]
        if not self.adaptive_cutoffs:  # older code refuses an adaptive model's key, and only it
            del data["adaptive_cutoffs"]
        return data


ATTENTION_FIELDS = ("memory", "attention_layer", "boom_size")  # ModelConfig's sha-lstm fields
# One sequence's attention memory (memory x hidden_size float32) may take at most this much; how
# many sequences fit in the machine is checked when a state is made (models/attention.py).
MAX_MEMORY_BYTES_PER_ROW = 4 * 2**30


@dataclass
class TrainConfig(_JsonConfig):
    """How to train. The defaults are the tuned 2-core CPU setting (benchmarks/quality_cpu.py)."""

    tokenizer: str = "char"  # char | byte | word | bpe
    vocab_size: int = 8000  # bpe only
    min_freq: int = 1  # word only: rarer words become <unk>
    max_vocab: int = 0  # word only: keep the most frequent N words (0 = all)
    val_fraction: float = 0.05  # contiguous tail held out when no validation file is given
    encoding_errors: str = "strict"  # strict | replace
    encoding: str = "utf-8"  # any Python text codec: latin-1, cp1252, utf-16, ...
    keep_line_endings: bool = False  # False: \r\n and lone \r are read as \n (data.iter_text)
    batch_size: int = 16
    # micro-steps of batch_size rows per optimizer step (gradient accumulation; the rows of
    # all of them make the step's batch: training/distributed.py draws the layout)
    grad_accum: int = 1
    seq_len: int = 64
    lr: float = 1.1e-2
    min_lr_ratio: float = 0.05  # cosine decays to lr * min_lr_ratio
    weight_decay: float = 0.01
    warmup_steps: int = 100
    grad_clip: float = 1.0
    max_steps: int = 0  # 0 = no step limit
    epochs: float = 0.0  # 0 = no epoch limit
    max_time: float = 0.0  # seconds of training, 0 = no time limit
    eval_every: int = 250  # steps between evaluations
    eval_tokens: int = 0  # tokens of validation per periodic eval (0 = all of it)
    patience: int = 0  # evaluations without improvement before stopping (0 = never)
    sample_tokens: int = 200  # sample printed at each evaluation (0 = none)
    seed: int = 1337
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    # auto = bf16 autocast on CUDA and on CPUs with bf16 instructions (AMX or AVX512-BF16),
    # fp32 elsewhere; fp32 on CUDA lets matmuls and cuDNN use TF32; bf16 needs CUDA or a CPU
    # with bf16 instructions (runtime.resolve_precision)
    precision: str = "auto"
    log_every: int = 10  # steps between progress updates (the only host syncs in the loop)
    # Fine-tuning tools (ULMFiT, Howard & Ruder 2018; training/finetune.py), for any run but
    # meant for one started from a base model (--init-from): layer group k from the top learns
    # at lr / lr_layer_decay**k; one more group from the top unfreezes every unfreeze_every
    # steps (0 = all train from the start); freeze_embeddings keeps the embedding as it is.
    lr_layer_decay: float = 1.0
    unfreeze_every: int = 0
    freeze_embeddings: bool = False
    # Conditioning (issue #13, documents.py): where each document's label comes from ("" none,
    # folders, jsonl), the label of unlabelled documents in a labelled corpus ("" = an error),
    # and where feature vectors come from ("" none, jsonl)
    labels_from: str = ""
    unlabelled_as: str = ""
    features_from: str = ""
    # AWD-LSTM's loss and schedule options (issue #16), off by default.
    ar: float = 0.0  # activation regularisation: ar * mean(dropped last-layer output ** 2)
    tar: float = 0.0  # temporal AR: tar * mean((h_t - h_{t-1}) ** 2), undropped last layer
    # Window lengths drawn around seq_len (N(seq_len, 5) with p 0.95, else seq_len / 2), the
    # learning rate scaled by length / seq_len; the draw follows the seed (training/bptt.py).
    variable_seq_len: bool = False
    # adamw (warmup + cosine) | nt-asgd: SGD at a constant lr, averaged once validation has not
    # improved for NT_ASGD_NONMONO evaluations (training/ntasgd.py)
    optimizer: str = "adamw"

    def check_values(self) -> None:
        _check(
            self.tokenizer in TOKENIZERS,
            f"tokenizer must be one of {', '.join(TOKENIZERS)}, got {self.tokenizer!r}",
        )
        _check(
            self.encoding_errors in ("strict", "replace"),
            f"encoding_errors must be strict or replace, got {self.encoding_errors!r}",
        )
        _check(
            _is_text_encoding(self.encoding),
            f"unknown text encoding {self.encoding!r} (for example utf-8, latin-1, cp1252, utf-16)",
        )
        _check(
            self.vocab_size >= 256 or self.tokenizer != "bpe",
            f"vocab_size must be >= 256 for bpe (its byte alphabet alone is 256), got "
            f"{self.vocab_size}",
        )
        _check(self.vocab_size >= 2, "vocab_size must be >= 2")
        _check(self.min_freq >= 1, "min_freq must be >= 1")
        _check(self.max_vocab >= 0, "max_vocab must be >= 0")
        _check(0.0 < self.val_fraction < 1.0, "val_fraction must be in (0, 1)")
        _check(self.batch_size > 0, "batch_size must be > 0")
        _check(self.grad_accum >= 1, "grad_accum must be >= 1")
        _check(self.seq_len > 0, "seq_len must be > 0")
        _check(self.lr > 0, "lr must be > 0")
        _check(0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio must be in [0, 1]")
        _check(self.weight_decay >= 0, "weight_decay must be >= 0")
        _check(self.warmup_steps >= 0, "warmup_steps must be >= 0")
        _check(self.grad_clip >= 0, "grad_clip must be >= 0 (0 = off)")
        _check(self.max_steps >= 0, "max_steps must be >= 0")
        _check(self.epochs >= 0, "epochs must be >= 0")
        _check(self.max_time >= 0, "max_time must be >= 0")
        _check(self.eval_every > 0, "eval_every must be > 0")
        _check(self.eval_tokens >= 0, "eval_tokens must be >= 0")
        _check(self.patience >= 0, "patience must be >= 0")
        _check(self.sample_tokens >= 0, "sample_tokens must be >= 0")
        _check(self.log_every > 0, "log_every must be > 0")
        _check(self.lr_layer_decay >= 1.0, "lr_layer_decay must be >= 1 (1 = off)")
        _check(self.unfreeze_every >= 0, "unfreeze_every must be >= 0 (0 = off)")
        _check(
            self.labels_from in LABEL_SOURCES,
            f"labels_from must be folders or jsonl, got {self.labels_from!r}",
        )
        _check(
            self.features_from in ("", "jsonl"),
            f"features_from must be jsonl, got {self.features_from!r}",
        )
        _check(
            not self.unlabelled_as or bool(self.labels_from),
            "unlabelled_as needs labels_from (--labels-from folders or jsonl)",
        )
        for name in ("ar", "tar"):
            _check(getattr(self, name) >= 0, f"{name} must be >= 0 (0 = off)")
        _check(
            self.optimizer in OPTIMIZERS,
            f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}",
        )
        # SGD's weight decay is an L2 term: every step shrinks the weights by lr * weight_decay
        # (AdamW's default 0.01 at NT-ASGD's lr 30 would take 30 % of every weight a step)
        _check(
            self.optimizer != "nt-asgd" or self.lr * self.weight_decay < 0.1,
            f"with optimizer nt-asgd, weight_decay is SGD's L2 penalty: lr x weight_decay = "
            f"{self.lr * self.weight_decay:g} would shrink every weight by that much a step "
            "(AWD-LSTM uses 1.2e-6)",
        )
        _check(
            self.precision in PRECISIONS,
            f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}",
        )


# Sampling settings too small for float32 (issue #10: temperature 1e-40, top_p 1e-50 and a
# repetition penalty of 1e-300 all gave "zzzz"). Below GREEDY_BELOW the temperature is greedy
# (logits / 1e-4 stay far from float32's 3.4e38); a top_p below MIN_TOP_P is taken as MIN_TOP_P,
# which float32 holds and which keeps only the top token (its probability is at least 1/V); a
# repetition penalty below MIN_REPETITION_PENALTY (1e-3 already scales a seen token's logit a
# thousandfold) is refused. lstmgen.sampling and lstmgen.reference.generate apply them.
GREEDY_BELOW = 1e-4
MIN_TOP_P = 1e-8
MIN_REPETITION_PENALTY = 1e-3
# The longest stop string (characters), as the server's limit: generated text that may be the start
# of one is held back, so a longer one delays the text and costs work per token (issue #10).
MAX_STOP_CHARS = 256


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric setting: ``low`` to ``high``, ``low`` itself excluded when
    ``open_low``. ``GenerationConfig`` checks its settings against ``SAMPLING_RANGES``; the
    server quotes the same range, with its own upper limit, when it refuses a request."""

    low: float
    high: float = math.inf
    open_low: bool = False
    note: str = ""  # what a boundary value means, for the message

    def __contains__(self, value: float) -> bool:
        return (value > self.low if self.open_low else value >= self.low) and value <= self.high

    def text(self, high: float = math.inf) -> str:
        """'>= 0.001', 'in (0, 1]', or with a caller's lower ``high``: 'in [0.001, 10]'."""
        high = min(high, self.high)
        if high == math.inf:
            return f">= {self.low:g}"
        return f"in {'(' if self.open_low else '['}{self.low:g}, {high:g}]"


SAMPLING_RANGES = {
    "max_new_tokens": Range(0),
    "temperature": Range(0.0, note=" (0 = greedy)"),
    "top_k": Range(0, note=" (0 = off)"),
    "top_p": Range(0.0, 1.0, open_low=True),
    "repetition_penalty": Range(MIN_REPETITION_PENALTY),
}


@dataclass
class GenerationConfig(_JsonConfig):
    """How to decode. ``temperature == 0`` means greedy."""

    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    repetition_penalty: float = 1.0  # 1 = off (CTRL-style: divide positive logits)
    stop: list[str] = field(default_factory=list)
    seed: int | None = None

    def check_values(self) -> None:
        for name, valid in SAMPLING_RANGES.items():
            _check(getattr(self, name) in valid, f"{name} must be {valid.text()}{valid.note}")
        _check(
            isinstance(self.stop, list) and all(isinstance(s, str) and s for s in self.stop),
            "stop must be a list of non-empty strings",
        )
        longest = max(map(len, self.stop), default=0)
        _check(
            longest <= MAX_STOP_CHARS,
            f"stop strings may have at most {MAX_STOP_CHARS} characters, got {longest}",
        )


# What `lstmgen train --init-from BASE` uses where the user sets nothing else (training/
# finetune.py). lr_layer_decay 2.6 is ULMFiT's (Howard & Ruder 2018, section 3.2); the short
# warmup gives AdamW's fresh moments a few steps before full-size updates reach the pretrained
# weights (the schedule still caps it at 10 % of the run, then decays: ULMFiT's slanted
# triangular rates have the same shape). lr 3e-3, not the training default 1.1e-2: measured
# step-budgeted (benchmarks/finetune_probe.py, results/finetune_probe.json: a 2x128 byte LSTM
# pretrained 2,500 steps on WikiText-2, then 600 steps on tiny-shakespeare, val nats/char of
# the best checkpoint). On a 25 KB slice, where a little text overfits, lr 3e-3 ends at 2.162
# against 2.201 at 1.1e-2 (which peaks at step 200 and then overfits) and 2.191 at 1.1e-2 with
# dropout 0.2; on 100 KB the two lrs tie (2.105 against 2.097); 1e-3 is too slow (2.240).
# 5e-3 measured as well (2.161 on 25 KB, 2.092 on 100 KB) but starts to overfit the 25 KB slice
# after 300 steps, where 3e-3 still improves: 3e-3 is the safer default for a base wider than
# this probe's (the default 2x384 overfits sooner). The width bears it out: a 2x256 base (1,500
# steps) fine-tuned on 100 KB ends at 2.054 with lr 3e-3 against 2.069 with 1.1e-2, where
# 2x128 had them tied. lr_layer_decay 2.6 neither helped nor hurt
# at lr 3e-3 (2.162 / 2.105 against 2.160 / 2.097 without it); it stays for what it keeps of
# the base (results/finetune.json: base-corpus loss 2.44 with the tools, 2.53 without).
# Dropout 0.2 did not help at lr 3e-3 (2.167 on 25 KB, 2.137 against 2.105 on 100 KB), so it
# stays the base's; a detokenized ("raw") WikiText base transferred worse than the tokenized
# text (2.166 against 2.097). The trainer already keeps the best checkpoint by validation;
# --patience stops a run that has stopped improving.
FINETUNE_DEFAULTS: dict[str, Any] = {"lr_layer_decay": 2.6, "warmup_steps": 20, "lr": 3e-3}

# Named bundles of settings for people who do not want to know them. "cpu-small" is the
# default (measured in benchmarks/quality_cpu.py); "tiny" is for smoke tests and demos.
#
# "gpu-fast" is the time-limited GPU setting for benchmarks/race.py (tiny-shakespeare, 120 s on
# one H200). It was chosen from issue 5's reference figures, not tuned on a GPU yet:
# - The run is limited by overfitting, not compute: a plain 3x512 LSTM at batch 128x256 peaks at
#   val 1.4305 after 80 s and then gets worse, and 120 s at ~0.9M tokens/s is ~110 passes over
#   the 1.0M training characters. Hence dropout 0.35 (applied after each of the 3 layers) and
#   weight decay 0.1 instead of more steps.
# - Width is nearly free: on an H200 an LSTM step is bound by the 256 sequential time steps, not
#   arithmetic (3x512 takes 35-36 ms per step at batch 64 and at 256; 3x1024 at batch 128, fp32
#   with TF32, 36 ms: 920k tokens/s). 3x1024 (~21M parameters) gets 4x the recurrent capacity
#   of 3x512 in the same ~3,300 steps; batch 128x256 is the measured shape.
# - precision fp32 (TF32 on CUDA), not bf16: that speed was measured in fp32/TF32, and under
#   autocast PyTorch runs cuDNN RNNs in fp16 without loss scaling (ATen's
#   cudnn/AutocastRNN.cpp), a risk to quality that a race does not need.
# - lr 2e-3: 8e-3, tuned for a 2x256 LSTM on CPU, scaled by 1/width for Adam on hidden matrices;
#   200 warmup steps (~6% of the run); max_time drives the cosine decay (race.py sets it).
# - eval_every 300 (~11 s): about ten full validation passes (each well under a second) pick
#   the best checkpoint; log_every 50: one host sync every ~1.8 s.
# On CPU it runs, slowly (a step takes on the order of a minute on 2 cores).
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "cpu-small": {"model": {}, "train": {}},
    "gpu-fast": {
        "model": {"embedding_size": 128, "hidden_size": 1024, "num_layers": 3, "dropout": 0.35},
        "train": {
            "batch_size": 128,
            "seq_len": 256,
            "lr": 2e-3,
            "weight_decay": 0.1,
            "warmup_steps": 200,
            "eval_every": 300,
            "log_every": 50,
            "precision": "fp32",
        },
    },
    "tiny": {
        "model": {"embedding_size": 16, "hidden_size": 32, "num_layers": 1, "dropout": 0.0},
        "train": {"batch_size": 8, "seq_len": 32, "warmup_steps": 10, "eval_every": 50},
    },
}

# Word-level presets (issue #16), AWD-LSTM's recipe (Merity et al. 2017: 3x1150, embedding 400,
# tied, weight drop 0.5, locked dropout 0.4 / 0.25 / 0.4, embedding dropout 0.1, AR 2, TAR 1,
# variable BPTT around 70) scaled to a budget, picked by measurement against the
# word_language_model baseline (benchmarks/word_quality.py, word_sweep.py; README tables).
# - word-cpu, 20 minutes on a 2-core CPU: a few epochs of PTB at most, so the model is small
#   (2x400) and regularised lightly (a short run underfits before it overfits); AdamW with the
#   cosine schedule converges faster per token than SGD; clip 0.25 and BPTT 35 as the baseline.
#   The decoder is an untied adaptive softmax ("auto": 2000 and min(10000, V / 2), so
#   2000,5000 on PTB and 2000,10000 on WikiText-2): 1.8x (PTB) to 2.8x (WikiText-2) the
#   tokens/s of the tied full softmax, and lower test perplexity on both corpora (PTB 94.02
#   against 120.96 in fp32; WikiText-2 154.33 against 308.39). Precision is auto: bf16 on a
#   CPU with bf16 instructions, on AMX 1.7x the tokens/s at the same loss per token (PTB:
#   0.721x, 0.758x and 0.740x the baseline's test perplexity in three 20-minute runs). Tied
#   adaptive, lighter or heavier regularisation, lr 8e-3, E 200, 2x512 and NT-ASGD all
#   measured worse or no better (README).
# - word-gpu, 10 minutes on one H200: AWD-LSTM's own size and regularisation, batch 80; AdamW
#   (lr 2e-3, cosine over the budget) instead of 500 epochs of NT-ASGD; fp32 with TF32 (under
#   bf16 autocast cuDNN runs RNNs in fp16 without loss scaling, see gpu-fast).
PRESETS["word-cpu"] = {
    "model": {
        "embedding_size": 400,
        "hidden_size": 400,
        "num_layers": 2,
        "dropout": 0.0,
        "tie_weights": False,
        "adaptive_cutoffs": "auto",
        "weight_drop": 0.2,
        "dropout_input": 0.2,
        "dropout_hidden": 0.1,
        "dropout_output": 0.3,
        "dropout_embedding": 0.05,
    },
    "train": {
        "tokenizer": "word",
        "batch_size": 32,
        "seq_len": 35,
        "lr": 5e-3,  # the sweep's winner (results/word_sweep_cpu.json): 3e-3 was 10 % worse
        "warmup_steps": 100,
        "grad_clip": 0.25,
        "ar": 2.0,
        "tar": 1.0,
        "variable_seq_len": True,
        "max_time": 1200.0,
        "eval_every": 500,
        # a full pass over WikiText-2's 217k validation words takes minutes on 2 cores
        "eval_tokens": 20000,
        "log_every": 20,
    },
}
PRESETS["word-gpu"] = {
    "model": {
        "embedding_size": 400,
        "hidden_size": 1150,
        "num_layers": 3,
        "dropout": 0.0,
        "tie_weights": True,
        "weight_drop": 0.5,
        "dropout_input": 0.4,
        "dropout_hidden": 0.25,
        "dropout_output": 0.4,
        "dropout_embedding": 0.1,
    },
    "train": {
        "tokenizer": "word",
        "batch_size": 80,
        "seq_len": 70,
        "lr": 2e-3,
        "warmup_steps": 200,
        "grad_clip": 0.25,
        "ar": 2.0,
        "tar": 1.0,
        "variable_seq_len": True,
        "max_time": 600.0,
        "eval_every": 200,
        "log_every": 50,
        "precision": "fp32",
    },
}
