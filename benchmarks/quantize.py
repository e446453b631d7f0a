"""int8 and ONNX: size, loss and CPU decoding speed against float32 (#14).

One char LSTM (vocab 65, embedding 128, 3x512; random weights: speed does not depend on
training), saved, quantized (`lstmgen quantize`) and exported (`lstmgen export --format onnx`,
float32 and `--int8`). In one process, interleaved repeats, temperature 0.8:

- size: model directory bytes, int8 / float32 (floor <= 0.30);
- decode tokens/s at batch 1 and 64: eager ``nn.LSTM`` stepping float32 (the loop a user
  writes, as benchmarks/generation.py), lstmgen float32 and int8 (``model.complete``: the
  torch backend, ``--backend torch``), the int8 directory as ``lstmgen generate RUN-int8``
  decodes it on CPU (``int8_dir``: onnxruntime on graphs built from the directory, through
  the NumPy sampler), and the onnx backend on float32 and ``--int8`` exports;
  floor: the int8 directory at batch 1 >= 8x eager;
- cold start: ``lstmgen generate DIR --max-new-tokens 1``, whole process, torch vs onnx backend,
  and the int8 directory with the default backend (onnx) and ``--backend torch``;
- the physical reference: weight bytes read per token / memory bandwidth (NumPy copying a
  large array), the floor on a batch-1 step if every weight came from DRAM, and how close each
  path comes (weights that fit the last-level cache can beat it);
- validation loss increase of int8 over float32 (floor <= 1 %) on tiny-shakespeare's val.txt:
  ``--loss-model RUN`` (a trained char model directory), else a 3x512 model trained here for
  ``--train-seconds``. The int8 loss is the int8 weights' (``lstmgen eval`` on the quantized
  directory).

    python benchmarks/quantize.py                       # result quantize_cpu.json
    python benchmarks/quantize.py --tiny --name t       # seconds, for testing this script
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# One BLAS thread unless told: NumPy's OpenBLAS threads (lstmgen's float32 CPU step) and
# torch's would otherwise fight for the cores (sampling.py), and on a shared machine a spinning
# BLAS thread made the float32 path 40x slower in a trial run.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import SHARED_DATA, write_result
from generation import eager_tokens_per_s

from lstmgen import LanguageModel, ModelConfig
from lstmgen.export.onnx_export import export_onnx
from lstmgen.export.onnx_runtime import OnnxModel
from lstmgen.export.quantize import quantize_model_dir
from lstmgen.reference.generate import stream_text as numpy_stream_text
from lstmgen.tokenizers import CharTokenizer

STEPS = {1: 300, 64: 60}


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def lstmgen_rate(model: LanguageModel, batch: int, steps: int, seed: int) -> float:
    t0 = time.perf_counter()
    model.complete("", n=batch, max_new_tokens=steps, temperature=0.8, seed=seed)
    return batch * steps / (time.perf_counter() - t0)


def torch_ao(fn, *args):
    """``fn(*args)`` with int8 directories stepping through torch.ao (recurrent_int8.py's
    fallback without onnxruntime) instead of onnxruntime."""
    from lstmgen.models import recurrent_int8

    chosen = recurrent_int8.int8_stepper
    recurrent_int8.int8_stepper = recurrent_int8.Int8Stepper
    try:
        return fn(*args)
    finally:
        recurrent_int8.int8_stepper = chosen


def numpy_int8_product_us(n_in: int, n_out: int) -> dict:
    """One batch-1 product in NumPy: float32 (BLAS) against int8 (no integer BLAS: NumPy's
    generic loop, int32 accumulation), the NumPy int8 path's core."""
    rng = np.random.default_rng(0)
    w32 = rng.standard_normal((n_in, n_out)).astype(np.float32)
    w8 = rng.integers(-127, 128, (n_in, n_out)).astype(np.int8)
    x32 = rng.standard_normal((1, n_in)).astype(np.float32)
    x8 = rng.integers(-127, 128, (1, n_in)).astype(np.int8)
    out = {}
    for name, f in (("float32", lambda: x32 @ w32), ("int8", lambda: x8.astype(np.int32) @ w8)):
        f()
        t0 = time.perf_counter()
        for _ in range(20):
            f()
        out[f"numpy_{name}_us"] = round((time.perf_counter() - t0) / 20 * 1e6, 1)
    return out


def onnx_rate(model: OnnxModel, batch: int, steps: int, seed: int) -> float:
    t0 = time.perf_counter()
    for _ in numpy_stream_text(
        model, [""] * batch, max_new_tokens=steps, temperature=0.8, seed=seed
    ):
        pass
    return batch * steps / (time.perf_counter() - t0)


def bandwidth_gb_s(mb: int) -> float:
    """Memory bandwidth as NumPy copying a large array sees it: (read + write) bytes / s."""
    a = np.ones(mb * 2**20 // 8)
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t0)
    return 2 * a.nbytes / best / 1e9


def weight_bytes_per_token(path: Path) -> int:
    """Bytes of weights a batch-1 step reads: every matrix, one embedding row, biases."""
    from safetensors import safe_open

    total = 0
    with safe_open(str(path / "model.safetensors"), "numpy") as f:
        for k in f.keys():
            t = f.get_slice(k)
            shape, size = t.get_shape(), {"F32": 4, "I8": 1}[t.get_dtype()]
            n = int(np.prod(shape))
            if k.startswith("embedding.weight"):
                n //= shape[0]  # one row (a scale of the int8 embedding: one number)
            total += n * size
    return total


def word_model_sizes(tmp: Path, tiny: bool) -> dict:
    """The embedding's share: a word-level model (vocabulary 10,000: the embedding and the
    decoder dominate), float32 against int8 without and with ``--embedding``."""
    from lstmgen.tokenizers import WordTokenizer

    V = 200 if tiny else 10000
    tok = WordTokenizer(["<eos>", "<unk>", *(f"w{i}" for i in range(V - 2))])
    E, H = (16, 16) if tiny else (256, 512)
    cfg = ModelConfig(vocab_size=V, embedding_size=E, hidden_size=H, num_layers=2)
    LanguageModel(cfg, tok).save_pretrained(tmp / "word")
    quantize_model_dir(tmp / "word", tmp / "word-int8")
    quantize_model_dir(tmp / "word", tmp / "word-int8-emb", embedding=True)
    f32 = dir_bytes(tmp / "word")
    return {
        "model": f"word LSTM 2x{H}, embedding {E}, vocab {V:,}, untied",
        "float32_bytes": f32,
        "int8_over_float32": round(dir_bytes(tmp / "word-int8") / f32, 4),
        "int8_embedding_too_over_float32": round(dir_bytes(tmp / "word-int8-emb") / f32, 4),
    }


def priming(model: OnnxModel, prompt_len: int, repeats: int) -> dict:
    """A prompt through prime.onnx (ONNX's LSTM over all its tokens, one call) against one
    step.onnx call per token: whether the prime graph earns its place."""
    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, (1, prompt_len))
    out = {}
    for name, fn in (
        ("prime_graph", lambda: model(ids)),
        ("step_by_step", lambda: _step_through(model, ids)),
    ):
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[f"{name}_ms"] = round(1000 * statistics.median(times), 2)
    out["prompt_tokens"] = prompt_len
    out["prime_graph_speedup"] = round(out["step_by_step_ms"] / out["prime_graph_ms"], 2)
    return out


def _step_through(model: OnnxModel, ids: np.ndarray) -> None:
    state = None
    for t in range(ids.shape[1]):
        _, state = model(ids[:, t : t + 1], state)


def cold_start(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def eval_loss(model_dir: Path, text: Path) -> float:
    cmd = [sys.executable, "-m", "lstmgen", "eval", str(model_dir), str(text), "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)["loss"]


def loss_increase(args: argparse.Namespace, tmp: Path) -> dict:
    data = Path(os.environ.get("LSTMGEN_DATA_DIR") or SHARED_DATA) / "tiny-shakespeare"
    val = data / "val.txt"
    if args.loss_model:
        model_dir, how = Path(args.loss_model), f"the model in {args.loss_model}"
    else:
        model_dir = tmp / "trained"
        H, L = (32, 1) if args.tiny else (512, 3)
        train = data / "train.txt"
        if args.tiny:
            small = tmp / "train_small.txt"
            small.write_text(train.read_text()[:20000])
            train, val = small, small
        cmd = [
            sys.executable,
            "-m",
            "lstmgen",
            "train",
            str(train),
            "-o",
            str(model_dir),
            "--hidden-size",
            str(H),
            "--num-layers",
            str(L),
            "--embedding-size",
            "128",
            "--max-time",
            str(args.train_seconds),
            "--eval-every",
            "100000",
            "--sample-tokens",
            "0",
            "--device",
            "cpu",
        ]
        subprocess.run(cmd, check=True, capture_output=True)
        how = f"char {L}x{H} trained {args.train_seconds}s here on tiny-shakespeare train.txt"
        if args.keep_loss_model:  # e.g. the teacher of benchmarks/distill.py
            shutil.copytree(model_dir, args.keep_loss_model)
    quantize_model_dir(model_dir, tmp / "trained-int8")
    f32, int8 = eval_loss(model_dir, val), eval_loss(tmp / "trained-int8", val)
    return {
        "model": how,
        "text": str(val.name),
        "float32_loss": round(f32, 5),
        "int8_loss": round(int8, 5),
        "increase_percent": round(100 * (int8 - f32) / f32, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (torch and onnxruntime)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--loss-model", help="a trained char model directory for the loss row")
    ap.add_argument("--train-seconds", type=int, default=180)
    ap.add_argument(
        "--keep-loss-model",
        metavar="DIR",
        help="copy the model trained for the loss row to DIR (a teacher for distill.py)",
    )
    ap.add_argument("--tiny", action="store_true", help="a small model and few steps (testing)")
    ap.add_argument("--name", default="quantize_cpu")
    ap.add_argument("--notes", default="", help="recorded with the result")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tok = CharTokenizer.fit(["".join(chr(c) for c in range(32, 96)) + "\n"])
    H, L, E = (32, 2, 16) if args.tiny else (512, 3, 128)
    steps = {b: max(2, s // 10) for b, s in STEPS.items()} if args.tiny else STEPS
    cfg = ModelConfig(vocab_size=tok.vocab_size, embedding_size=E, hidden_size=H, num_layers=L)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        LanguageModel(cfg, tok).save_pretrained(tmp / "f32")
        quantize_model_dir(tmp / "f32", tmp / "int8")
        export_onnx(tmp / "f32", tmp / "onnx")
        export_onnx(tmp / "f32", tmp / "onnx-int8", int8=True)
        f32 = LanguageModel.from_pretrained(tmp / "f32")
        int8 = LanguageModel.from_pretrained(tmp / "int8")
        onnx32 = OnnxModel(tmp / "onnx", threads=args.threads)
        onnx8 = OnnxModel(tmp / "onnx-int8", threads=args.threads)
        int8_dir = OnnxModel(tmp / "int8", threads=args.threads)  # what generate RUN-int8 runs
        paths = {
            "eager_nn_lstm_f32": lambda b, s, r: eager_tokens_per_s(f32, b, s, seed=r),
            "lstmgen_f32": lambda b, s, r: lstmgen_rate(f32, b, s, r),
            "lstmgen_int8": lambda b, s, r: lstmgen_rate(int8, b, s, r),
            "lstmgen_int8_torch_ao": lambda b, s, r: torch_ao(lstmgen_rate, int8, b, s, r),
            "onnx_f32": lambda b, s, r: onnx_rate(onnx32, b, s, r),
            "onnx_int8": lambda b, s, r: onnx_rate(onnx8, b, s, r),
            "int8_dir": lambda b, s, r: onnx_rate(int8_dir, b, s, r),
        }
        rows = []
        for batch, n in steps.items():
            runs: dict[str, list[float]] = {k: [] for k in paths}
            for fn in paths.values():
                fn(batch, max(2, n // 10), 99)  # warm-up
            for r in range(args.repeats):
                for name, fn in paths.items():
                    runs[name].append(fn(batch, n, r))
            med = {k: statistics.median(v) for k, v in runs.items()}
            eager = med["eager_nn_lstm_f32"]
            row = {"batch": batch, "tokens_per_sequence": n}
            row.update({f"{k}_tokens_per_s": round(v, 1) for k, v in med.items()})
            row.update({f"{k}_vs_eager": round(v / eager, 2) for k, v in med.items()})
            row["int8_vs_lstmgen_f32"] = round(med["lstmgen_int8"] / med["lstmgen_f32"], 2)
            row["int8_dir_vs_lstmgen_f32"] = round(med["int8_dir"] / med["lstmgen_f32"], 2)
            row["onnx_f32_vs_lstmgen_f32"] = round(med["onnx_f32"] / med["lstmgen_f32"], 2)
            row["onnx_int8_vs_lstmgen_int8"] = round(med["onnx_int8"] / med["lstmgen_int8"], 2)
            row["int8_onnxruntime_vs_torch_ao"] = round(
                med["lstmgen_int8"] / med["lstmgen_int8_torch_ao"], 2
            )
            row["runs"] = {k: [round(x, 1) for x in v] for k, v in runs.items()}
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "runs"}))

        size = {
            "float32_bytes": dir_bytes(tmp / "f32"),
            "int8_bytes": dir_bytes(tmp / "int8"),
            "onnx_float32_bytes": dir_bytes(tmp / "onnx"),
            "onnx_int8_bytes": dir_bytes(tmp / "onnx-int8"),
        }
        size["int8_over_float32"] = round(size["int8_bytes"] / size["float32_bytes"], 4)
        print(json.dumps(size))
        words = word_model_sizes(tmp, args.tiny)
        print(json.dumps(words))
        prime_row = priming(onnx32, 16 if args.tiny else 256, args.repeats)
        print(json.dumps(prime_row))
        micro = {
            "product": f"(1, {2 * H}) @ ({2 * H}, {4 * H})",
            **numpy_int8_product_us(2 * H, 4 * H),
        }
        print(json.dumps(micro))

        bw = bandwidth_gb_s(64 if args.tiny else 1024)
        physical = {"bandwidth_gb_s": round(bw, 2)}
        for kind, path in (("float32", tmp / "f32"), ("int8", tmp / "int8")):
            nbytes = weight_bytes_per_token(path)
            physical[f"{kind}_weight_bytes_per_token"] = nbytes
            physical[f"{kind}_floor_tokens_per_s"] = round(bw * 1e9 / nbytes, 1)
        b1 = rows[0]
        for k in paths:
            kind = "int8" if "int8" in k else "float32"
            measured = b1[f"{k}_tokens_per_s"]
            physical[f"{k}_fraction_of_floor"] = round(
                measured / physical[f"{kind}_floor_tokens_per_s"], 3
            )
        print(json.dumps(physical))

        lstmgen = [sys.executable, "-m", "lstmgen", "generate"]
        cold: dict[str, list[float]] = {"torch": [], "onnx": [], "int8_dir": [], "int8_torch": []}
        for _ in range(args.repeats):
            int8_cmd = [*lstmgen, str(tmp / "int8"), "--max-new-tokens", "1"]
            cold["int8_dir"].append(cold_start(int8_cmd))
            cold["int8_torch"].append(cold_start([*int8_cmd, "--backend", "torch"]))
            cold["torch"].append(cold_start([*lstmgen, str(tmp / "f32"), "--max-new-tokens", "1"]))
            cold["onnx"].append(
                cold_start(
                    [*lstmgen, str(tmp / "onnx"), "--backend", "onnx", "--max-new-tokens", "1"]
                )
            )
        cold_row = {f"{k}_seconds": round(statistics.median(v), 3) for k, v in cold.items()}
        print(json.dumps(cold_row))
        loss = loss_increase(args, tmp)
        print(json.dumps(loss))

    floors = {
        "int8_size_ratio_le_0.30": size["int8_over_float32"] <= 0.30,
        "int8_loss_increase_le_1_percent": loss["increase_percent"] <= 1.0,
        "int8_batch1_ge_8x_eager": rows[0]["int8_dir_vs_eager"] >= 8.0,
    }
    out = write_result(
        args.name,
        {
            "model": f"char LSTM {L}x{H}, embedding {E}, vocab 65, random weights (speed)",
            "threads": args.threads,
            "onnxruntime": __import__("onnxruntime").__version__,
            "onnx": __import__("onnx").__version__,
            "rows": rows,
            "size": size,
            "physical_reference": physical,
            "numpy_int8_candidate": micro,
            "word_model_size": words,
            "onnx_prompt_priming": prime_row,
            "cold_start_generate_1_token": cold_row,
            "loss": loss,
            "floors": floors,
            "notes": args.notes,
        },
    )
    print(f"floors: {floors}\nwrote {out}")


def markdown(r: dict) -> str:
    """The README's table of this result (benchmarks/render_readme.py)."""
    one, many = (next(x for x in r["rows"] if x["batch"] == b) for b in (1, 64))
    size, loss, phys = r["size"], r["loss"], r["physical_reference"]
    words, cold = r["word_model_size"], r["cold_start_generate_1_token"]
    floor8 = "met" if r["floors"]["int8_batch1_ge_8x_eager"] else "**not met**"
    lines = [
        "| what | float32 | int8 | floor |",
        "|---|---|---|---|",
        f"| model directory size | {size['float32_bytes'] / 1e6:.1f} MB | "
        f"{size['int8_bytes'] / 1e6:.2f} MB (**{size['int8_over_float32']:.3f}x**) | <= 0.30 |",
        f"| {words['model']} | {words['float32_bytes'] / 1e6:.1f} MB | "
        f"{words['int8_over_float32']:.3f}x; with `--embedding` "
        f"{words['int8_embedding_too_over_float32']:.3f}x | report |",
        f"| validation loss, {loss['text']} ({loss['model']}) | {loss['float32_loss']:.5f} | "
        f"{loss['int8_loss']:.5f} (**{loss['increase_percent']:+.3f} %**) | <= 1 % |",
        f"| batch 1 decode, tokens/s (x eager `nn.LSTM` stepping, "
        f"{one['eager_nn_lstm_f32_tokens_per_s']:,.0f}) | lstmgen "
        f"{one['lstmgen_f32_tokens_per_s']:,.0f} ({one['lstmgen_f32_vs_eager']:.2f}x) | lstmgen "
        f"{one['lstmgen_int8_tokens_per_s']:,.0f} (**{one['lstmgen_int8_vs_eager']:.2f}x**); onnx "
        f"backend {one['onnx_int8_tokens_per_s']:,.0f} (**{one['onnx_int8_vs_eager']:.2f}x**) "
        + (
            "| >= 8x: see the int8 directory's row |"
            if "int8_dir_tokens_per_s" in one
            else f"| >= 8x: {floor8} for an int8 model directory |"
        ),
        f"| batch 64 decode, tokens/s | eager {many['eager_nn_lstm_f32_tokens_per_s']:,.0f}, "
        f"lstmgen {many['lstmgen_f32_tokens_per_s']:,.0f} | lstmgen "
        f"{many['lstmgen_int8_tokens_per_s']:,.0f} (**{many['int8_vs_lstmgen_f32']:.2f}x** "
        "lstmgen float32) | report |",
    ]
    for row in (one, many):
        lines.append(
            f"| onnx backend tokens/s (x lstmgen), batch {row['batch']} | "
            f"{row['onnx_f32_tokens_per_s']:,.0f} ({row['onnx_f32_vs_lstmgen_f32']:.2f}x) | "
            f"{row['onnx_int8_tokens_per_s']:,.0f} ({row['onnx_int8_vs_lstmgen_int8']:.2f}x) "
            "| report |"
        )
    if "int8_dir_tokens_per_s" in one:  # results from before generate RUN-int8 used onnxruntime
        lines.insert(
            5,
            f"| batch 1 / 64 decode, int8 directory as `generate RUN-int8` decodes it (onnx"
            " backend on graphs built from the directory), tokens/s | | "
            f"{one['int8_dir_tokens_per_s']:,.0f} (**{one['int8_dir_vs_eager']:.2f}x** eager) / "
            f"{many['int8_dir_tokens_per_s']:,.0f} ({many['int8_dir_vs_lstmgen_f32']:.2f}x lstmgen"
            f" float32) | >= 8x: {floor8} |",
        )
    if "int8_dir_seconds" in cold:
        lines.append(
            f"| cold start, `generate RUN-int8` of 1 token | `--backend torch` "
            f"{cold['int8_torch_seconds']:.2f} s | default (onnx) {cold['int8_dir_seconds']:.2f} s"
            " | report |"
        )
    lines += [
        f"| cold start, `generate` of 1 token (whole process) | torch backend "
        f"{cold['torch_seconds']:.2f} s | onnx backend {cold['onnx_seconds']:.2f} s | report |",
        f"| physical reference: weight bytes per token / measured bandwidth "
        f"({phys['bandwidth_gb_s']:.1f} GB/s, NumPy copy) | "
        f"{phys['float32_weight_bytes_per_token'] / 1e6:.1f} MB: "
        f"{phys['float32_floor_tokens_per_s']:,.0f} tok/s | "
        f"{phys['int8_weight_bytes_per_token'] / 1e6:.2f} MB: "
        f"{phys['int8_floor_tokens_per_s']:,.0f} tok/s | report |",
        "",
        f"Processor: {r['machine'].get('cpu_model', r['machine'].get('processor'))}, "
        f"{r['machine'].get('cpu_count')} cores, {r['threads']} thread(s); {r['date'][:10]}; "
        f"`{r['command']}`" + (f"; {r['notes']}" if r.get("notes") else "") + ".",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
