"""The NumPy reference: LSTM, GRU and RNN language models (and the sha-lstm, issue #12) from
scratch, checked against PyTorch.

Read it next to docs/lstm.md, which derives every equation:

    cells.py       the three recurrent layers: forward over a sequence, backpropagation through time
    attention.py   the sha-lstm attention block: layer norm, one head over a memory, boom, backward
    layers.py      embedding, linear, dropout, softmax cross-entropy, gradient clipping, Adam(W)
    model.py       the language model: same weights, names and state as ``lstmgen.model``
    gradcheck.py   analytic gradients against centred finite differences
    generate.py    sampling and streaming generation
    train.py       the training loop, step for step like the PyTorch trainer's
    checkpoint.py  model directories, read and written without PyTorch

Nothing here imports torch.

>>> from lstmgen.reference import LanguageModel                     # doctest: +SKIP
>>> model = LanguageModel.from_pretrained("runs/poems")            # doctest: +SKIP
>>> print("".join(model.generate("ROMEO:", max_new_tokens=50, seed=1)))  # doctest: +SKIP
"""

from .cells import (
    gru_backward,
    gru_forward,
    lstm_backward,
    lstm_forward,
    rnn_backward,
    rnn_forward,
)
from .generate import Event, stream_text
from .gradcheck import check_model
from .layers import Adam, clip_grad_norm, cross_entropy
from .model import LanguageModel, parameter_shapes

__all__ = [
    "Adam",
    "Event",
    "LanguageModel",
    "check_model",
    "clip_grad_norm",
    "cross_entropy",
    "gru_backward",
    "gru_forward",
    "lstm_backward",
    "lstm_forward",
    "parameter_shapes",
    "rnn_backward",
    "rnn_forward",
    "stream_text",
]
