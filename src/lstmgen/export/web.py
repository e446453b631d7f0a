"""``lstmgen export --format web``: a static folder that generates in the browser, no server.

The folder is the ONNX export (onnx_export.py: step.onnx, prime.onnx, tokenizer.json,
generation_config.json, config.json, onnx.json) plus ``index.html`` (web_page.html) and
onnxruntime-web's WebAssembly build, copied in at export time (no CDN: the page works offline
and from ``python -m http.server``). onnxruntime-web comes from npm: ``--ort-web PATH`` (a
tarball from ``npm pack onnxruntime-web@VERSION`` or an unpacked package folder), else
``npm pack`` is run here.

The page's tokenizer and sampler are small JavaScript copies (char and byte tokenizers;
temperature, top-k, a seeded generator): greedy text equals ``--backend onnx``'s.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
from importlib import resources
from pathlib import Path

from ..errors import CheckpointError, ConfigError
from ..modeldir import read_model_meta
from .onnx_export import export_onnx

ORT_WEB_VERSION = "1.30.0"
ORT_FILES = ("ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
WEB_TOKENIZERS = ("char", "byte")
PAGE = "index.html"
HINT = (
    f"install Node's npm, or pass --ort-web PATH (a tarball from `npm pack"
    f" onnxruntime-web@{ORT_WEB_VERSION}` or a node_modules/onnxruntime-web folder)"
)


def export_web(src: str | Path, dst: str | Path, ort_web: str | Path | None = None) -> list[str]:
    """Write the static folder ``dst`` for the model in ``src``; returns its files."""
    _, tokenizer, _ = read_model_meta(src)
    if tokenizer.kind not in WEB_TOKENIZERS:
        raise ConfigError(
            f"the web page supports {' and '.join(WEB_TOKENIZERS)} tokenizers, not"
            f" {tokenizer.kind}: use --format onnx for this model"
        )
    dst = Path(dst)
    with tempfile.TemporaryDirectory() as tmp:
        ort = _ort_files(Path(ort_web) if ort_web else None, Path(tmp))  # before writing dst
        export_onnx(src, dst)
        for name, data in ort.items():
            (dst / name).write_bytes(data)
    page = resources.files("lstmgen.export").joinpath("web_page.html").read_text("utf-8")
    (dst / PAGE).write_text(page.replace("ORT_WEB_VERSION", ORT_WEB_VERSION), "utf-8")
    return sorted(p.name for p in dst.iterdir())


def _ort_files(source: Path | None, tmp: Path) -> dict[str, bytes]:
    """onnxruntime-web's files by name, from ``source`` or from ``npm pack``."""
    if source is None:
        npm = shutil.which("npm")
        if npm is None:
            raise ConfigError(f"the web export needs onnxruntime-web: {HINT}")
        try:
            subprocess.run(
                [npm, "pack", f"onnxruntime-web@{ORT_WEB_VERSION}", "--pack-destination", str(tmp)],
                check=True,
                capture_output=True,
                timeout=600,
            )
        except (subprocess.SubprocessError, OSError):
            raise ConfigError(f"`npm pack onnxruntime-web` failed (offline?): {HINT}") from None
        source = next(tmp.glob("onnxruntime-web-*.tgz"))
    if not source.exists():
        raise CheckpointError(f"no such file or folder: {source}")
    if source.is_dir():
        dist = source / "dist" if (source / "dist").is_dir() else source
        missing = [n for n in ORT_FILES if not (dist / n).is_file()]
        if missing:
            raise ConfigError(f"{source} lacks {', '.join(missing)}: {HINT}")
        return {n: (dist / n).read_bytes() for n in ORT_FILES}
    try:
        with tarfile.open(source) as tar:  # members read by name: nothing is extracted
            out = {}
            for n in ORT_FILES:
                member = tar.extractfile(f"package/dist/{n}")
                if member is None:
                    raise KeyError(n)
                out[n] = member.read()
            return out
    except (tarfile.TarError, KeyError, OSError):
        raise ConfigError(f"{source} is not an onnxruntime-web package: {HINT}") from None
