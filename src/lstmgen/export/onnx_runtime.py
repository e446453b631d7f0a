"""The onnx backend: decoding an exported folder (onnx_export.py) with onnxruntime, no torch.

``OnnxModel`` is called like the NumPy reference model, ``logits, state = model(ids (B, T),
state)``, so ``reference.generate.stream_text`` drives it: the same sampling filters
(repetition penalty, temperature, top-k, top-p) and the same ``textstream.TextStreams`` as the
other backends. Greedy decoding gives the PyTorch backend's tokens, and with ``TorchRandom`` as
the generator a temperature draws what PyTorch's generator would: the same seed gives the same
text as ``--backend torch``.

A prompt is primed through prime.onnx in one call (ONNX's LSTM operator over all its tokens),
each new token through step.onnx.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointError, ConfigError, LstmgenError
from ..files import read_json
from ..modeldir import TOKENIZER, read_model_meta
from .onnx_export import GRAPHS, MANIFEST, ONNX_FORMAT, ONNX_FORMAT_VERSION, need


class TorchRandom:
    """float64 uniforms in [0, 1) equal to ``torch.empty(n, dtype=torch.float64).uniform_(
    generator=torch.Generator().manual_seed(seed))`` on CPU, without torch: PyTorch's CPU
    generator is MT19937 seeded with the seed's low 32 bits (NumPy's ``RandomState`` seeds the
    same way), and a float64 uniform takes two 32-bit outputs (first the high word) and keeps
    53 bits. The generator (generate.py) draws B uniforms per token in row order, as
    ``reference.generate.next_token`` asks for them, so the same seed samples the same text as
    ``--backend torch`` (up to float rounding between the two backends' logits, which can move
    a draw that lands within ~1e-7 of a token's boundary)."""

    def __init__(self, seed: int):
        self.state = np.random.RandomState(seed & 0xFFFFFFFF)

    def random(self, shape: tuple[int, ...]) -> np.ndarray:
        n = int(np.prod(shape))
        words = self.state.randint(0, 2**32, size=2 * n, dtype=np.uint32).astype(np.uint64)
        bits = ((words[0::2] << np.uint64(32)) | words[1::2]) & np.uint64((1 << 53) - 1)
        return (bits.astype(np.float64) * 2.0**-53).reshape(shape)


def is_onnx_folder(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).exists()


def is_int8_dir(path: str | Path) -> bool:
    """A model directory with int8 weights (``lstmgen quantize``), which ``OnnxModel`` decodes
    too. Reads config.json only (a bad one says so when the directory is loaded)."""
    from ..files import read_json as read
    from ..modeldir import CONFIG

    try:
        config = read(Path(path) / CONFIG)
    except LstmgenError:
        return False
    return isinstance(config, dict) and config.get("quantization") is not None


def onnx_decodes(path: str | Path) -> bool:
    """An int8 directory whose architecture has an ONNX decoding step (``--backend auto``
    takes the onnx backend for it; any other goes to torch)."""
    from ..files import read_json as read
    from ..modeldir import CONFIG
    from .onnx_export import EXPORTABLE

    return is_int8_dir(path) and read(Path(path) / CONFIG).get("arch", "recurrent") in EXPORTABLE


class OnnxModel:
    """An exported folder behind onnxruntime: ``(logits (B, 1, V), state) = model(ids (B, T))``.

    >>> model = OnnxModel("runs/poems-onnx")  # doctest: +SKIP
    >>> from lstmgen.reference import stream_text  # doctest: +SKIP
    """

    def __init__(self, path: str | Path, threads: int = 1, every_position: bool = False):
        """``every_position``: an int8 directory also gets a prime graph with the logits at
        every position (``logits_at_every_position``, the server's); an exported folder
        steps for those."""
        ort = need("onnxruntime")
        path = Path(path)
        options = ort.SessionOptions()
        # Decoding is a chain of small products: threads cost more than they give at batch 1
        # (the same reason the PyTorch CPU path runs single-threaded kernels).
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # warnings would print on every load
        if path.is_dir() and not is_onnx_folder(path) and is_int8_dir(path):
            self._from_int8_dir(ort, options, path, every_position)
            return
        if not path.is_dir() or not is_onnx_folder(path):
            raise CheckpointError(f"{path} is not an lstmgen ONNX folder (no {MANIFEST})")
        manifest = read_json(path / MANIFEST)
        if (
            not isinstance(manifest, dict)
            or manifest.get("format") != ONNX_FORMAT
            or manifest.get("format_version") != ONNX_FORMAT_VERSION
        ):
            raise CheckpointError(f"{path / MANIFEST} is not an lstmgen ONNX manifest")
        if not (path / TOKENIZER).exists():
            raise CheckpointError(f"{path} has no {TOKENIZER}: export the folder again")
        self.config, self.tokenizer, self.generation_config = read_model_meta(path)
        self.path = path
        self.state_names: list[str] = list(manifest.get("state", []))
        self.sessions = {k: self._session(ort, options, path / f) for k, f in GRAPHS.items()}
        self._shapes()

    def _shapes(self) -> None:
        L, H = self.config.num_layers, self.config.hidden_size
        self.state_shape = (L, H)
        # every exported state part is (L, B, H): the batch on axis 1 (reference/generate.prime)
        self.state_batch_dims = (1,) * len(self.state_names)

    def _from_int8_dir(self, ort: Any, options: Any, path: Path, every_position: bool) -> None:
        """An int8 model directory (``lstmgen quantize``), its graphs built here in memory:
        step.onnx's products on the directory's own int8 matrices (MatMulInteger, the graph
        ``OrtInt8Stepper`` runs inside the torch backend), the prompt primed in float32 on
        their dequantized values (ONNX's LSTM), as the torch backend primes an int8 model.
        Built on load rather than written by ``quantize``: two graphs holding the weights
        again would take the directory from 0.26x to ~0.75x of the float32 size, and building
        them costs milliseconds (NumPy transposes, no re-quantization)."""
        need("onnx")
        from safetensors.numpy import load_file

        from ..config import ModelConfig
        from ..modeldir import WEIGHTS
        from ..reference.checkpoint import read_model_dir
        from .int8 import QWEIGHT, SCALE
        from .onnx_export import EXPORTABLE
        from .onnx_graph import prime_model, state_names, step_model

        self.config, self.tokenizer, self.generation_config, weights = read_model_dir(path)
        config: ModelConfig = self.config
        if config.arch not in EXPORTABLE:
            raise ConfigError(
                f"{path}: arch {config.arch!r} has no ONNX decoding step: use --backend torch"
            )
        raw = load_file(str(path / WEIGHTS))  # read_model_dir checked it
        int8 = {
            k[: -len(QWEIGHT)]: (raw[k], raw[k[: -len(QWEIGHT)] + SCALE])
            for k in raw
            if k.endswith(QWEIGHT)
        }
        self.path = path
        self.state_names = state_names(config.cell)
        graphs = {"step": step_model(config, weights, int8), "prime": prime_model(config, weights)}
        if every_position:
            graphs["prime_all"] = prime_model(config, weights, all_logits=True)
        self.sessions = {
            k: ort.InferenceSession(
                g.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
            for k, g in graphs.items()
        }
        self._shapes()

    @staticmethod
    def _session(ort: Any, options: Any, file: Path) -> Any:
        if not file.exists():
            raise CheckpointError(f"missing file {file}")
        try:
            return ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own exception types (InvalidProtobuf, Fail...)
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc)
            raise CheckpointError(f"{file} is not a valid ONNX model ({first})") from None

    def init_state(self, batch_size: int) -> tuple[np.ndarray, ...]:
        L, H = self.state_shape
        return tuple(np.zeros((L, batch_size, H), np.float32) for _ in self.state_names)

    def logits_at_every_position(
        self, ids: np.ndarray, state: tuple[np.ndarray, ...]
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """ids (B, T) -> logits (B, T, V) at every position and the state: one prime call
        where the graph was built (an int8 directory), else one step.onnx call per token."""
        if "prime_all" in self.sessions:
            feed = {
                n: np.ascontiguousarray(p) for n, p in zip(self.state_names, state, strict=True)
            }
            feed["ids"] = np.ascontiguousarray(ids, dtype=np.int64)
            logits, *new = self.sessions["prime_all"].run(None, feed)
            return logits, tuple(new)
        out = []
        for t in range(ids.shape[1]):
            logits, state = self(ids[:, t : t + 1], state)
            out.append(logits)
        return np.concatenate(out, axis=1), state

    def __call__(self, ids: np.ndarray, state: Any = None) -> tuple[np.ndarray, Any]:
        """ids (B, T) -> logits (B, 1, V) after the last token, and the state: a tuple of
        (L, B, H) arrays (the reference generator's form)."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if state is None:
            state = self.init_state(ids.shape[0])
        parts = state if isinstance(state, tuple) else (state,)
        feed = {
            n: np.ascontiguousarray(p, dtype=np.float32)
            for n, p in zip(self.state_names, parts, strict=True)
        }
        if ids.shape[1] == 1:
            feed["ids"] = ids[:, 0]
            out = self.sessions["step"].run(None, feed)
        else:
            feed["ids"] = ids
            out = self.sessions["prime"].run(None, feed)
        logits, new = out[0], tuple(out[1:])
        return logits[:, None], new
