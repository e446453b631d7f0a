"""ONNX export and the torch-free onnx backend (#14)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from test_quantize import make_model

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture
def exported(tmp_path, run_cli):
    # larger weights than at initialisation: decisive logits, so greedy text is not decided by
    # float rounding between two nearly equal tokens
    model = make_model(tmp_path / "f32", hidden=32, scale=3.0)
    r = run_cli("export", tmp_path / "f32", "--format", "onnx", "-o", tmp_path / "onnx")
    assert r.code == 0, r.err
    return model, tmp_path / "onnx"


def test_export_writes_checked_graphs_tokenizer_and_config(exported):
    _, path = exported
    names = {p.name for p in path.iterdir()}
    assert {"step.onnx", "prime.onnx", "tokenizer.json", "generation_config.json"} <= names
    manifest = json.loads((path / "onnx.json").read_text())
    assert manifest["state"] == ["state_0", "state_1"] and manifest["int8"] is False
    import onnx

    step = onnx.load(str(path / "step.onnx"))
    onnx.checker.check_model(step, full_check=True)
    assert [i.name for i in step.graph.input] == ["ids", "state_0", "state_1"]
    assert step.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "B"  # dynamic batch


def test_onnx_step_and_prime_match_pytorch(exported):
    from lstmgen.export.onnx_runtime import OnnxModel

    model, path = exported
    om = OnnxModel(path)
    ids = np.array([[1, 5, 3, 7, 2], [2, 2, 4, 1, 6]])
    want, want_state = model(torch.tensor(ids))
    got, state = om(ids)  # prime.onnx
    np.testing.assert_allclose(got[:, 0], want[:, -1].detach().numpy(), atol=1e-4)
    stepped, s = om(ids[:, :1])
    for t in range(1, 5):
        stepped, s = om(ids[:, t : t + 1], s)  # step.onnx
    np.testing.assert_allclose(stepped, got, atol=1e-4)
    for a, b in zip(state, want_state, strict=True):
        np.testing.assert_allclose(a, b.detach().numpy(), atol=1e-5)


def test_greedy_text_is_the_torch_backends_for_500_tokens(exported, run_cli):
    _, path = exported
    args = ["-p", "the", "-t", "0", "--max-new-tokens", "500", "--no-prompt"]
    torch_out = run_cli("generate", path.parent / "f32", *args)
    onnx_out = run_cli("generate", path, "--backend", "onnx", *args)
    assert torch_out.code == 0 and onnx_out.code == 0, onnx_out.err
    assert len(torch_out.out) > 400
    text = torch_out.out
    changes = sum(a != b for a, b in zip(text, text[1:], strict=False))
    assert len(set(text)) > 5 and changes > 20  # not one token repeated
    assert onnx_out.out == torch_out.out


@pytest.mark.parametrize(
    "options",
    [["-t", "1"], ["-t", "0.8", "--top-k", "5", "--top-p", "0.9", "--repetition-penalty", "1.3"]],
)
def test_same_seed_same_text_as_the_torch_backend(exported, run_cli, options):
    _, path = exported
    args = ["--max-new-tokens", "200", "--seed", "3", "-n", "3", "-p", "the", *options]
    want = run_cli("generate", path.parent / "f32", *args)
    got = run_cli("generate", path, "--backend", "onnx", *args)
    assert want.code == 0 and got.code == 0, got.err
    assert got.out == want.out
    other = run_cli("generate", path, "--backend", "onnx", *args[:3], "4", *args[4:])
    assert other.out != got.out  # the seed matters


def test_torch_random_replays_torchs_generator():
    from lstmgen.export.onnx_runtime import TorchRandom

    for seed in (0, 7, 2**40 + 3, -5):
        want = torch.empty(2, 3, dtype=torch.float64).uniform_(
            generator=torch.Generator().manual_seed(seed)
        )
        np.testing.assert_array_equal(TorchRandom(seed).random((2, 3)), want.numpy())


def test_onnx_backend_never_imports_torch(exported):
    _, path = exported
    code = (
        "import sys; from lstmgen.cli import main; "
        f"assert main(['generate', {str(path)!r}, '--backend', 'onnx', '-p', 'the', "
        "'--max-new-tokens', '20', '--top-k', '5', '--repetition-penalty', '1.2']) == 0; "
        "assert not any(n == 'torch' or n.startswith('torch.') for n in sys.modules), 'torch'"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("the")


def test_int8_export_decodes_close_to_float(tmp_path, run_cli):
    from lstmgen.export.onnx_runtime import OnnxModel

    model = make_model(tmp_path / "f32", scale=2.0)
    r = run_cli("export", tmp_path / "f32", "-o", tmp_path / "onnx8", "--int8")
    assert r.code == 0, r.err
    step = (tmp_path / "onnx8" / "step.onnx").read_bytes()
    assert b"MatMulInteger" in step or b"DynamicQuantizeMatMul" in step
    assert b"DynamicQuantizeLSTM" in (tmp_path / "onnx8" / "prime.onnx").read_bytes()
    ids = np.array([[1, 5, 3]])
    for prompt in (ids[:, :1], ids):  # step.onnx, prime.onnx
        got, _ = OnnxModel(tmp_path / "onnx8")(prompt)
        want, _ = model(torch.tensor(prompt))
        want = want[:, -1].detach().numpy()
        assert np.abs(got[:, 0] - want).max() < 0.05 * np.abs(want).max() + 1e-3


def test_export_of_an_int8_directory(tmp_path, run_cli):
    make_model(tmp_path / "f32")
    assert run_cli("quantize", tmp_path / "f32", "-o", tmp_path / "int8").code == 0
    assert run_cli("export", tmp_path / "int8", "-o", tmp_path / "onnx").code == 0
    r = run_cli("generate", tmp_path / "onnx", "--backend", "onnx", "--max-new-tokens", "5")
    assert r.code == 0, r.err


# --- bad input: one line each ------------------------------------------------------------------


def one_line(r, code=1):
    assert r.code == code, r.err
    assert len(r.err.strip().splitlines()) == 1 and r.err.startswith("error: "), r.err
    return r.err


def test_exporting_an_architecture_with_no_decoding_step(tmp_path, run_cli, monkeypatch):
    import lstmgen.export.onnx_export as onnx_export

    make_model(tmp_path / "f32")
    monkeypatch.setattr(onnx_export, "EXPORTABLE", ())  # as for an architecture without one
    err = one_line(run_cli("export", tmp_path / "f32", "-o", tmp_path / "onnx"))
    assert "cannot export arch 'recurrent' to ONNX: it has no exported decoding step" in err
    assert not (tmp_path / "onnx").exists()


def test_an_onnx_folder_missing_its_tokenizer(exported, run_cli):
    _, path = exported
    (path / "tokenizer.json").unlink()
    err = one_line(run_cli("generate", path, "--backend", "onnx"))
    assert "has no tokenizer.json" in err


def test_onnxruntime_not_installed_names_the_extra(exported, run_cli, monkeypatch):
    _, path = exported
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    err = one_line(run_cli("generate", path, "--backend", "onnx"))
    assert "onnxruntime is not installed: pip install lstmgen[onnx]" in err


def test_a_corrupt_onnx_file(exported, run_cli):
    _, path = exported
    data = (path / "step.onnx").read_bytes()
    (path / "step.onnx").write_bytes(data[: len(data) // 2])
    err = one_line(run_cli("generate", path, "--backend", "onnx"))
    assert "step.onnx is not a valid ONNX model" in err


def test_torch_backend_on_an_onnx_folder(exported, run_cli):
    _, path = exported
    err = one_line(run_cli("generate", path), code=2)
    assert "is an ONNX export: decode it with `lstmgen generate" in err and "--backend onnx" in err


@pytest.mark.parametrize("command", ["quantize", "export"])
def test_new_commands_help_without_torch(command):
    code = (
        "import sys; from lstmgen.cli import main; "
        f"assert main([{command!r}, '--help']) == 0; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "--output" in r.stdout


@pytest.mark.slow
def test_quantize_benchmark_runs_end_to_end(tmp_path):
    from conftest import benchmark_result

    r = benchmark_result(
        tmp_path, "quantize.py", "--tiny", "--repeats", "1", "--train-seconds", "5", "--name", "q"
    )
    assert r["machine"]["cpu_model"] and r["rows"][0]["batch"] == 1
    assert r["size"]["int8_bytes"] < r["size"]["float32_bytes"]
    assert "int8_batch1_ge_8x_eager" in r["floors"]
    # the int8 directory as `generate RUN-int8` decodes it, and the torch backend's int8
    assert "int8_dir" in r["rows"][0]["runs"] and "lstmgen_int8" in r["rows"][0]["runs"]
    assert {"int8_dir_seconds", "int8_torch_seconds"} <= set(r["cold_start_generate_1_token"])
