"""Model and run folders crafted to exhaust memory, hang or crash later (issue #10): special
files, oversize and deeply nested JSON, tokenizers, trainer states and metrics that load but do
not make sense, tensors relabelled to another dtype, a full disk while saving, and ``info`` on
a folder that is no model at all."""

import errno
import json
import os
import shutil
import struct
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from conftest import TINY_MODEL
from lstmgen import CheckpointError, LanguageModel, ModelConfig, files, modeldir
from lstmgen.reference.checkpoint import read_model_dir
from lstmgen.tokenizers import CharTokenizer, WordTokenizer
from lstmgen.train import STATE_FILE, Trainer
from test_cli import assert_one_line_error
from test_config_files import tiny_run  # noqa: F401  (the module-scoped run fixture)

STATE = STATE_FILE.as_posix()


def copy_of(run, tmp_path, name="copy"):
    copy = tmp_path / name
    shutil.copytree(run, copy)
    return copy


def tiny_model_dir(path, tokenizer):
    cfg = ModelConfig(vocab_size=tokenizer.vocab_size, **TINY_MODEL)
    LanguageModel(cfg, tokenizer).save_pretrained(path)
    return path


# Run in a separate process: a reader blocked in safetensors' open holds the GIL, so a thread
# of the test could not unblock it. Whenever a reader waits on the FIFO it opens it for writing
# (the reader then sees an empty file); whenever a writer waits, it opens it for reading and
# closes it (the writer gets EPIPE). Either way it records the wait in the marker file.
UNBLOCKER = """
import errno, os, sys, time
fifo, marker = sys.argv[1], sys.argv[2]
while True:
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # ENXIO unless a reader waits
        open(marker, "a").write("reader\\n")
    except OSError:
        pass
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a waiting writer's open completes
    time.sleep(0.05)
    try:
        if os.read(fd, 1 << 16):
            open(marker, "a").write("writer\\n")
    except BlockingIOError:  # a writer is there, with nothing written yet
        open(marker, "a").write("writer\\n")
    os.close(fd)
"""


@contextmanager
def fifo_at(path: Path):
    """Replace ``path`` by a FIFO that cannot hang the test (see UNBLOCKER); on leaving, assert
    that nothing ever blocked on it."""
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    marker = path.parent.parent / f"{path.name}.blocked"
    helper = subprocess.Popen([sys.executable, "-c", UNBLOCKER, str(path), str(marker)])
    try:
        yield
    finally:
        helper.kill()
        helper.wait()
    assert not marker.exists(), f"something blocked on the FIFO {path}"


# --- 1. special files, size limits, nesting --------------------------------------------------

SPECIAL_FILE_SCRIPT = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))  # a reader of /dev/zero dies here
from lstmgen.errors import CheckpointError
from lstmgen.modeldir import read_model_meta
try:
    read_model_meta(sys.argv[1])
except CheckpointError as exc:
    print(exc)
"""


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_json_file_linked_to_a_device_is_refused_unread(tmp_path, device):
    # A subprocess under a 2 GB address-space limit: before the fix each read grew past 6 GB.
    # Only the torch-free modeldir is imported, so it starts in well under a second.
    run = tiny_model_dir(tmp_path / "m", CharTokenizer(list("ab\n")))
    for name in ("config.json", "tokenizer.json", "generation_config.json"):
        saved = (run / name).read_bytes()
        (run / name).unlink()
        (run / name).symlink_to(device)
        r = subprocess.run(
            [sys.executable, "-c", SPECIAL_FILE_SCRIPT, str(run)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.stdout.strip() == f"{run / name} is not a regular file (a device)", r.stderr
        (run / name).unlink()
        (run / name).write_bytes(saved)


@pytest.mark.parametrize(
    "name", ["config.json", "tokenizer.json", "generation_config.json", "model.safetensors"]
)
def test_a_fifo_in_a_model_folder_never_blocks(tmp_path, tiny_run, run_cli, name):  # noqa: F811
    run = copy_of(tiny_run, tmp_path)
    message = f"{run / name} is not a regular file (a FIFO)"
    with fifo_at(run / name):
        with pytest.raises(CheckpointError) as err:
            LanguageModel.from_pretrained(run)
        assert str(err.value) == message
        assert_one_line_error(run_cli("info", run), 1, message)
        numpy = run_cli("generate", run, "--backend", "numpy", "--max-new-tokens", "3")
        assert_one_line_error(numpy, 1, message)


@pytest.mark.parametrize("name", [STATE, "train_config.json", "metrics.jsonl"])
def test_a_fifo_in_a_run_folder_never_blocks_info_or_resume(
    tmp_path,
    tiny_run,  # noqa: F811
    run_cli,
    name,
):
    run = copy_of(tiny_run, tmp_path)
    message = f"{run / name} is not a regular file (a FIFO)"
    with fifo_at(run / name):
        assert_one_line_error(run_cli("info", run), 1, message)
        assert_one_line_error(run_cli("train", "--resume", run, "--max-steps", "8"), 1, message)


def test_oversize_files_are_refused_before_reading(tmp_path, tiny_run, monkeypatch):  # noqa: F811
    run = copy_of(tiny_run, tmp_path)
    config = (run / "config.json").read_text()
    (run / "config.json").write_text(config + " " * files.MAX_CONFIG_BYTES)
    with pytest.raises(CheckpointError, match=r"config.json is too large \(over 4 MB\)"):
        LanguageModel.from_pretrained(run)
    (run / "config.json").write_text(config)
    monkeypatch.setattr(modeldir, "MAX_TOKENIZER_BYTES", 10)  # the real one is 256 MB
    with pytest.raises(CheckpointError, match=r"tokenizer.json is too large"):
        LanguageModel.from_pretrained(run)


def test_deeply_nested_json_is_a_clear_error(tmp_path, tiny_run, run_cli):  # noqa: F811
    run = copy_of(tiny_run, tmp_path)
    deep = "[" * 200_000 + "]" * 200_000
    (run / "config.json").write_text(deep)
    message = f"{run / 'config.json'} is nested more than 64 levels deep"
    with pytest.raises(CheckpointError) as err:
        LanguageModel.from_pretrained(run)
    assert str(err.value) == message
    assert_one_line_error(run_cli("info", run), 1, message)
    assert files.parse_json("[" * 64 + "]" * 64, "x")  # 64 levels are fine
    assert files.parse_json('["' + "[" * 100 + '"]', "x")  # brackets in strings are text


# --- 2. fields that load and crash later -----------------------------------------------------


def _chars_ints(d):
    d["chars"] = list(range(len(d["chars"])))


def _chars_duplicate(d):
    d["chars"][1] = d["chars"][0]


def _chars_empty(d):
    d["chars"][0] = ""


def _chars_multi(d):
    d["chars"][0] = "ab"


def _chars_missing(d):
    del d["chars"]


def _chars_replacement(d):
    d["replacement"] = ["x"]


def _words_ints(d):
    d["words"][0] = 7


def _words_empty(d):
    d["words"][0] = ""


def _words_space(d):
    d["words"][0] = "a b"


def _words_duplicate(d):
    d["words"][0] = d["words"][1]


def _unknown_key(d):
    d["extra"] = 1


@pytest.mark.parametrize(
    "kind, edit, message",
    [
        ("char", _chars_ints, "chars must be a list of strings, holding 0"),
        ("char", _chars_duplicate, "duplicate characters"),
        ("char", _chars_empty, "chars must be single characters, got ''"),
        ("char", _chars_multi, "chars must be single characters, got 'ab'"),
        ("char", _chars_missing, "chars must be a list of strings, missing"),
        ("char", _chars_replacement, "replacement must be one of its chars, got ['x']"),
        ("char", _unknown_key, "unknown key(s) extra"),
        ("word", _words_ints, "words must be a list of strings, holding 7"),
        ("word", _words_empty, "words must be non-empty, without whitespace, got ''"),
        ("word", _words_space, "words must be non-empty, without whitespace, got 'a b'"),
        ("word", _words_duplicate, "duplicate words"),
    ],
)
def test_crafted_tokenizer_fields_are_refused_at_load(tmp_path, kind, edit, message):
    tok = CharTokenizer(list("abc\n")) if kind == "char" else WordTokenizer(["<eos>", "<unk>", "a"])
    run = tiny_model_dir(tmp_path / "m", tok)
    data = json.loads((run / "tokenizer.json").read_text())
    edit(data)
    (run / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError) as err:
        LanguageModel.from_pretrained(run)
    assert str(err.value) == f"{run / 'tokenizer.json'}: malformed {kind} tokenizer: {message}"


def test_bpe_tokenizer_with_ids_out_of_range_is_refused(tmp_path):
    from lstmgen.tokenizers import BPETokenizer

    run = tiny_model_dir(tmp_path / "m", BPETokenizer.fit(["hello world"] * 5, vocab_size=258))
    data = json.loads((run / "tokenizer.json").read_text())
    vocab = data["hf"]["model"]["vocab"]
    vocab[next(iter(vocab))] = 100_000
    (run / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="BPE tokenizer ids must be 0..N-1"):
        LanguageModel.from_pretrained(run)
    (run / "tokenizer.json").write_text(json.dumps({"type": "bpe", "hf": [1]}))
    with pytest.raises(CheckpointError, match="hf must be a Hugging Face tokenizer"):
        LanguageModel.from_pretrained(run)


def edit_state(run, tensors_edit=None, meta_edit=None):
    path = run / STATE_FILE
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    tensors = load_file(path)
    if tensors_edit:
        tensors_edit(tensors)
    if meta_edit:
        meta_edit(meta)
    save_file(tensors, path, metadata=meta)
    return path


def _rename_moment(t):
    t["opt.0.exp_avgX"] = t.pop("opt.0.exp_avg")


def _hidden_shape(t):
    t["hidden.1"] = t["hidden.1"][:, :2].contiguous()


def _moment_dtype(t):
    t["opt.1.exp_avg_sq"] = t["opt.1.exp_avg_sq"].double()


def _rng_shape(t):
    t["rng.cpu"] = t["rng.cpu"][:100].contiguous()


def _position_string(m):
    m["position"] = json.dumps({**json.loads(m["position"]), "step": "7"})


def _position_deep(m):
    m["position"] = "[" * 100_000 + "]" * 100_000


def _groups_params(m):
    groups = json.loads(m["param_groups"])
    groups[0]["params"] = groups[0]["params"][:-1]
    m["param_groups"] = json.dumps(groups)


def _groups_lr(m):
    groups = json.loads(m["param_groups"])
    groups[1]["lr"] = "fast"
    m["param_groups"] = json.dumps(groups)


@pytest.mark.parametrize(
    "tensors_edit, meta_edit, message",
    [
        (_rename_moment, None, "missing ['opt.0.exp_avg'], unexpected ['opt.0.exp_avgX']"),
        (_hidden_shape, None, "hidden.1 has shape (2, 2, 8), expected (2, 4, 8)"),
        (_moment_dtype, None, "opt.1.exp_avg_sq has dtype float64, expected float32"),
        (_rng_shape, None, "rng.cpu has shape (100,), expected"),
        (None, _position_string, "position step must be an integer >= 0"),
        (None, _position_deep, "metadata position is nested more than 64 levels deep"),
        (None, _groups_params, "param_groups list other parameters than the model's"),
        (None, _groups_lr, "param_groups lr is 'fast'"),
    ],
)
def test_crafted_trainer_state_is_refused_on_resume(
    tmp_path,
    tiny_run,  # noqa: F811
    tensors_edit,
    meta_edit,
    message,
):
    run = copy_of(tiny_run, tmp_path)
    path = edit_state(run, tensors_edit, meta_edit)
    with pytest.raises(CheckpointError) as err:
        Trainer.resume(run)
    assert str(path) in str(err.value) and message in str(err.value)


def test_metrics_lines_that_are_not_records_are_skipped(tmp_path, tiny_run, run_cli):  # noqa: F811
    run = copy_of(tiny_run, tmp_path)
    with open(run / "metrics.jsonl", "a") as f:
        for line in [
            "[1, 2]",
            '"step"',
            "3",
            '{"step": "9", "train_loss": 1}',
            '{"step": 8, "val_loss": "low"}',
            '{"no": "step"}',
            "[" * 100_000 + "]" * 100_000,
            '{"step": 9, "val_loss": 2.5}',
        ]:
            f.write(line + "\n")
    r = run_cli("info", run, "--json")
    assert r.code == 0, r.err
    history = json.loads(r.out)["history"]
    assert history["evaluations"] == 1 and history["best_val_loss"] == 2.5
    Trainer.resume(run)  # drops rows past its step 7, and lines with no step: all added above
    assert (run / "metrics.jsonl").read_text() == (tiny_run / "metrics.jsonl").read_text()


# --- 3. a tensor relabelled to another dtype -------------------------------------------------


def relabel(path: Path, name: str, dtype: str) -> None:
    """Change one tensor's dtype in a safetensors header in place (same byte size)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    header[name]["dtype"] = dtype
    text = json.dumps(header, separators=(",", ":")).encode().ljust(n)
    assert len(text) == n
    path.write_bytes(raw[:8] + text + raw[8 + n :])


def test_a_tensor_relabelled_to_another_dtype_is_refused(tmp_path, tiny_run, run_cli):  # noqa: F811
    run = copy_of(tiny_run, tmp_path)
    weights = run / "model.safetensors"
    relabel(weights, "rnn.weight_hh_l0", "I32")
    message = f"{weights}: rnn.weight_hh_l0 has dtype I32, the model's weights are F32"
    with pytest.raises(CheckpointError) as err:
        LanguageModel.from_pretrained(run)
    assert str(err.value) == message
    with pytest.raises(CheckpointError) as err:
        read_model_dir(run)  # the NumPy backend
    assert str(err.value) == message
    assert_one_line_error(run_cli("generate", run, "--max-new-tokens", "3"), 1, message)


# --- 4. a full disk while saving -------------------------------------------------------------

# What safetensors raises when the disk fills (bindings/python/src/lib.rs, serialize_file:
# SafetensorError::new_err(format!("Error while serializing: {e:?}")) of an io::Error).
SAFETENSORS_ENOSPC = (
    'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space '
    'left on device" })'
)


def test_a_full_disk_while_saving_weights_is_one_error_and_keeps_the_old_file(
    tmp_path, monkeypatch
):
    import lstmgen.checkpoint

    run = tiny_model_dir(tmp_path / "m", CharTokenizer(list("ab\n")))
    before = (run / "model.safetensors").read_bytes()

    def full_disk(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 100)  # a part was written before the disk filled
        raise SafetensorError(SAFETENSORS_ENOSPC)

    monkeypatch.setattr(lstmgen.checkpoint, "save_file", full_disk)
    model = LanguageModel.from_pretrained(run)
    with pytest.raises(CheckpointError) as err:
        model.save_pretrained(run)
    assert str(err.value) == f"cannot write {run / 'model.safetensors'}: no space left on device"
    assert (run / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in run.iterdir()) == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
    ]


def test_a_full_disk_oserror_is_one_error_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "config.json"
    target.write_text("{}")

    def full_disk(tmp):
        Path(tmp).write_text("{")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(CheckpointError) as err:
        files.atomic_write(target, full_disk)
    assert str(err.value) == f"cannot write {target}: no space left on device"
    assert target.read_text() == "{}" and [p.name for p in tmp_path.iterdir()] == ["config.json"]


# --- 5. info on a folder that is not a model -------------------------------------------------


def test_info_on_a_folder_that_is_not_a_model(tmp_path, run_cli):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("buy milk\n")
    message = f"{tmp_path / 'notes'} is not an lstmgen model directory"
    assert_one_line_error(run_cli("info", tmp_path / "notes"), 1, message)
    run = tiny_model_dir(tmp_path / "m", CharTokenizer(list("ab\n")))
    (run / "config.json").unlink()  # some model files but not all: the specific message
    assert_one_line_error(run_cli("info", run), 1, f"missing file {run / 'config.json'}")
