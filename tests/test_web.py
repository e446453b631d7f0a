"""`lstmgen export --format web`: the static page generates in headless Chromium (#14)."""

import os
import shutil
import socket
import subprocess
import sys
import time

import httpx
import pytest

from test_quantize import make_model

pytest.importorskip("onnx")
VERSION = "1.30.0"


@pytest.fixture(scope="module")
def ort_web(tmp_path_factory):
    """onnxruntime-web's npm tarball: $LSTMGEN_ORT_WEB, else `npm pack` (network)."""
    if os.environ.get("LSTMGEN_ORT_WEB"):
        return os.environ["LSTMGEN_ORT_WEB"]
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("needs npm (or LSTMGEN_ORT_WEB=onnxruntime-web tarball)")
    where = tmp_path_factory.mktemp("npm")
    r = subprocess.run(
        [npm, "pack", f"onnxruntime-web@{VERSION}", "--pack-destination", str(where)],
        capture_output=True,
        timeout=600,
    )
    if r.returncode != 0:
        pytest.skip("npm pack onnxruntime-web failed (offline?)")
    return str(next(where.glob("*.tgz")))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_web_page_generates_the_onnx_backends_greedy_text(tmp_path, run_cli, ort_web):
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright")
    browser_path = os.environ.get("LSTMGEN_CHROMIUM") or shutil.which("chromium")
    if not browser_path:
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    make_model(tmp_path / "f32", hidden=32, scale=3.0)
    web = tmp_path / "web"
    r = run_cli("export", tmp_path / "f32", "--format", "web", "-o", web, "--ort-web", ort_web)
    assert r.code == 0, r.err
    assert {"index.html", "ort.wasm.bundle.min.mjs", "step.onnx"} <= {p.name for p in web.iterdir()}
    assert "cdn" not in (web / "index.html").read_text().lower()
    want = run_cli(
        "generate", web, "--backend", "onnx", "-p", "the", "-t", "0", "--max-new-tokens", "100"
    )
    assert want.code == 0, want.err
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=web,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/index.html")
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=browser_path, headless=True, args=["--no-sandbox"]
            )
            try:
                page = browser.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(f"http://127.0.0.1:{port}/index.html")
                page.wait_for_function(
                    "!document.querySelector('#generate').disabled", timeout=30000
                )
                page.fill("#prompt", "the")
                page.fill("#temperature", "0")
                page.fill("#max_tokens", "100")
                page.click("#generate")
                page.wait_for_function(
                    "/^(done|error)/.test(document.querySelector('#status').textContent)",
                    timeout=60000,
                )
                status = page.inner_text("#status")
                text = page.evaluate("document.querySelector('#output').textContent")
            finally:
                browser.close()
    finally:
        server.terminate()
        server.wait()
    assert not errors, errors
    assert status.startswith("done: 100 tokens"), status
    assert text == want.out.rstrip("\n")


def test_web_export_refuses_a_tokenizer_the_page_lacks(tmp_path, run_cli):
    from lstmgen.config import ModelConfig
    from lstmgen.model import LanguageModel
    from lstmgen.tokenizers import fit_tokenizer

    tok = fit_tokenizer("word", ["the quick brown fox\n"])
    cfg = ModelConfig(vocab_size=tok.vocab_size, embedding_size=8, hidden_size=8, num_layers=1)
    LanguageModel(cfg, tok).save_pretrained(tmp_path / "word")
    r = run_cli(
        "export",
        tmp_path / "word",
        "--format",
        "web",
        "-o",
        tmp_path / "web",
        "--ort-web",
        str(tmp_path),
    )
    assert r.code == 1 and len(r.err.strip().splitlines()) == 1, r.err
    assert "error: the web page supports char and byte tokenizers, not word" in r.err
    assert not (tmp_path / "web").exists()
