"""End to end: the real ``lstmgen serve`` process on a free loopback port, driven by the
official ``openai`` client, raw HTTP, and headless Chromium on the playground page."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip(
    "fastapi", reason="server tests need the serve extra: pip install lstmgen[serve]"
)
pytest.importorskip(
    "uvicorn", reason="server tests need the serve extra: pip install lstmgen[serve]"
)
httpx = pytest.importorskip("httpx", reason="server tests need httpx (pip install httpx)")

from lstmgen import LanguageModel  # noqa: E402
from lstmgen.generate import stream_text  # noqa: E402
from server_support import train_server_model  # noqa: E402

KEY = "e2e-secret"


class Server:
    def __init__(self, run: Path):
        env = {**os.environ, "LSTMGEN_API_KEY": KEY}  # the key comes from the environment
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lstmgen", "serve", str(run), "--port", "0",
             "--model-name", "tiny", "--log-level", "warning", "--device", "cpu"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )  # fmt: skip
        self.lines: list[str] = []
        found = threading.Event()

        def read() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.lines.append(line)
                if "serving " in line:
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(60):
            self.stop()
            pytest.fail("server did not start:\n" + "".join(self.lines))
        line = next(ln for ln in self.lines if "serving " in ln)
        self.url = line.split(" on ")[1].split("/ ")[0]
        assert self.url.startswith("http://127.0.0.1:")  # loopback by default
        self.headers = {"Authorization": f"Bearer {KEY}"}
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/health", headers=self.headers).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        pytest.fail("server did not answer /health:\n" + "".join(self.lines))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_server_model(tmp_path_factory.mktemp("e2e") / "run")


@pytest.fixture(scope="module")
def server(run_dir):
    s = Server(run_dir)
    yield s
    s.stop()
    log = "".join(s.lines)
    # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught.
    assert s.proc.returncode in (0, -signal.SIGTERM), log
    assert "Traceback" not in log, log


def reference(run_dir, prompt: str, **kw) -> str:
    model = LanguageModel.from_pretrained(run_dir)
    return "".join(ev.text for ev in stream_text(model, [prompt], **kw))


def test_openai_client(server, run_dir):
    openai = pytest.importorskip("openai", reason="needs the openai package (pip install openai)")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
    assert [m.id for m in client.models.list()] == ["tiny"]
    want = reference(run_dir, "ROMEO:", max_new_tokens=300, temperature=0.9, seed=11)
    r = client.completions.create(
        model="tiny", prompt="ROMEO:", max_tokens=300, temperature=0.9, seed=11
    )
    assert r.choices[0].text == want and r.choices[0].finish_reason == "length"
    assert r.usage.prompt_tokens == 6 and r.usage.completion_tokens == 300
    stream = client.completions.create(
        model="tiny", prompt="ROMEO:", max_tokens=300, temperature=0.9, seed=11, stream=True
    )
    pieces = [(c.choices[0].text, c.choices[0].finish_reason) for c in stream if c.choices]
    assert len(pieces) > 1 and "".join(p for p, _ in pieces) == want
    assert pieces[-1][1] == "length"
    # lstmgen's extra samplers go in extra_body; stop and logprobs are standard fields.
    r = client.completions.create(
        model="tiny",
        prompt="JULIET:",
        max_tokens=60,
        seed=3,
        stop=["\n"],
        logprobs=2,
        extra_body={"top_k": 5, "repetition_penalty": 1.2},
    )
    c = r.choices[0]
    assert "\n" not in c.text and len(c.logprobs.tokens) == len(c.logprobs.token_logprobs)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4", prompt="ROMEO:")
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.completions.create(model="tiny", prompt="ROMEO:", temperature=7)
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.completions.create(model="tiny", prompt="ROMEO:")


def test_concurrent_requests_are_batched_and_keep_their_seeds(server):
    def complete(i: int) -> str:
        body = {
            "prompt": ["ROMEO:", "JULIET:", "NURSE:", "床前"][i % 4],
            "max_tokens": 150,
            "seed": i,
            "temperature": [0.5, 1.0, 1.3][i % 3],
            "top_p": [1.0, 0.9][i % 2],
            "stream": i % 2 == 0,
        }
        r = httpx.post(
            server.url + "/v1/completions", json=body, headers=server.headers, timeout=60
        )
        assert r.status_code == 200
        if not body["stream"]:
            return r.json()["choices"][0]["text"]
        events = [b[6:] for b in r.text.split("\n\n") if b.startswith("data: ")]
        assert events[-1] == "[DONE]"
        return "".join(c["text"] for e in events[:-1] for c in json.loads(e)["choices"])

    alone = [complete(i) for i in range(12)]
    before = httpx.get(server.url + "/health", headers=server.headers).json()
    with ThreadPoolExecutor(12) as pool:
        together = list(pool.map(complete, range(12)))
    after = httpx.get(server.url + "/health", headers=server.headers).json()
    assert together == alone
    steps = after["steps"] - before["steps"]
    tokens = after["tokens_generated"] - before["tokens_generated"]
    assert tokens == 12 * 150 and steps < tokens  # several sequences per model step


def test_client_that_leaves_frees_its_rows(server):
    body = {"prompt": "ROMEO:", "max_tokens": 2000, "stream": True}
    with httpx.stream(
        "POST", server.url + "/v1/completions", json=body, headers=server.headers
    ) as r:
        first = next(r.iter_lines())
        assert first.startswith("data: ")
    deadline = time.time() + 10
    while time.time() < deadline:
        health = httpx.get(server.url + "/health", headers=server.headers).json()
        if health["active_sequences"] == 0:
            break
        time.sleep(0.05)
    assert health["active_sequences"] == 0


def _chromium() -> str | None:
    return os.environ.get("LSTMGEN_CHROMIUM") or shutil.which("chromium")


def test_playground_in_headless_chromium(server, tmp_path):
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="needs playwright (pip install playwright)"
    )
    browser_path = _chromium()
    if not browser_path:
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=browser_path, headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 760})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server.url + "/")
            page.wait_for_selector("#keybox:not([hidden])")  # the server wants a key
            page.fill("#apikey", KEY)
            # Count separate updates of the output: streamed text arrives in several pieces.
            page.evaluate(
                """() => {
                  window.updates = 0;
                  new MutationObserver(() => { window.updates += 1; }).observe(
                    document.querySelector('#output .text'),
                    {childList: true, characterData: true, subtree: true});
                }"""
            )
            page.fill("#prompt", "床前明月光，")
            page.fill("#seed", "5")
            page.locator("#max_tokens").fill("400")
            page.click("#generate")
            page.wait_for_function(
                "document.querySelector('#status').textContent.startsWith('done')", timeout=30000
            )
            text = page.inner_text("#output .text")
            status = page.inner_text("#status")
            label_picker = page.is_visible("#labelbox")  # this model has no labels
            updates = page.evaluate("window.updates")
            page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)
            assert (tmp_path / "playground.png").stat().st_size > 10_000
        finally:
            browser.close()
    assert not errors, errors
    assert "400 tokens" in status and "finish reason: length" in status
    assert len(text) == 400 and "\ufffd" not in text
    assert updates > 1, "the text should appear piece by piece"
    assert not label_picker
