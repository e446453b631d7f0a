"""An int8 model directory decodes through onnxruntime on CPU (#14): `generate RUN-int8`
picks the onnx backend (the fastest CPU path measured), `--backend torch` keeps PyTorch."""

import os
import subprocess
import sys

import pytest

from test_quantize import make_model

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture
def int8_dir(tmp_path, run_cli):
    # decisive logits (scaled weights), so greedy text is not decided by rounding
    make_model(tmp_path / "f32", hidden=32, scale=3.0)
    assert run_cli("quantize", tmp_path / "f32", "-o", tmp_path / "int8").code == 0
    return tmp_path / "int8"


def test_int8_directory_stays_small_and_normal(int8_dir, run_cli):
    # the graphs are built on load: quantize writes no ONNX files into the directory
    assert not any(p.suffix == ".onnx" for p in int8_dir.rglob("*"))
    assert run_cli("info", int8_dir).code == 0


def test_greedy_text_is_the_torch_int8_paths(int8_dir, run_cli):
    args = ["-p", "the", "-t", "0", "--max-new-tokens", "300", "--no-prompt", "-n", "2"]
    torch_out = run_cli("generate", int8_dir, "--backend", "torch", *args)
    auto_out = run_cli("generate", int8_dir, *args)
    onnx_out = run_cli("generate", int8_dir, "--backend", "onnx", *args)
    assert torch_out.code == auto_out.code == onnx_out.code == 0, auto_out.err
    text = torch_out.out
    assert len(text) > 400 and sum(a != b for a, b in zip(text, text[1:], strict=False)) > 20
    assert auto_out.out == onnx_out.out == text


def test_same_seed_same_text_as_torch_int8(int8_dir, run_cli):
    args = ["--max-new-tokens", "150", "--seed", "3", "-n", "2", "-p", "the", "-t", "0.9"]
    want = run_cli("generate", int8_dir, "--backend", "torch", *args)
    got = run_cli("generate", int8_dir, *args)
    assert want.code == got.code == 0, got.err
    assert got.out == want.out


def test_auto_backend_on_int8_never_imports_torch(int8_dir):
    code = (
        "import sys; from lstmgen.cli import main; "
        f"assert main(['generate', {str(int8_dir)!r}, '--device', 'cpu', '-p', 'the', "
        "'--max-new-tokens', '20']) == 0; "
        "assert not any(n == 'torch' or n.startswith('torch.') for n in sys.modules), 'torch'"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("the")


def test_auto_falls_back_to_torch_without_onnxruntime(int8_dir, run_cli, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "onnxruntime" else real(n, *a)
    )
    r = run_cli("generate", int8_dir, "-p", "the", "-t", "0", "--max-new-tokens", "5")
    assert r.code == 0, r.err
    assert "onnxruntime" not in r.err


def test_labels_on_an_int8_directory_take_the_torch_path(int8_dir, run_cli):
    # --label needs torch: auto must not pick onnx and then refuse
    r = run_cli("generate", int8_dir, "--label", "x", "--max-new-tokens", "3")
    assert "--backend torch" not in r.err


def test_auto_takes_torch_for_an_architecture_without_an_onnx_step(int8_dir, run_cli, monkeypatch):
    import lstmgen.export.onnx_export as onnx_export

    monkeypatch.setattr(onnx_export, "EXPORTABLE", ())  # as for an architecture without one
    r = run_cli("generate", int8_dir, "-p", "the", "--max-new-tokens", "5")
    assert r.code == 0, r.err
    err = run_cli("generate", int8_dir, "--backend", "onnx").err
    assert err.startswith("error:") and "has no ONNX decoding step: use --backend torch" in err


def test_onnx_backend_on_a_corrupt_int8_directory_is_one_line(int8_dir, run_cli):
    from lstmgen.modeldir import WEIGHTS

    data = (int8_dir / WEIGHTS).read_bytes()
    (int8_dir / WEIGHTS).write_bytes(data[: len(data) // 2])
    r = run_cli("generate", int8_dir, "--backend", "onnx")
    assert r.code != 0 and r.err.startswith("error:") and len(r.err.strip().splitlines()) == 1
