"""The server's conditioning extras (issue #13): ``label`` and ``features`` on completions,
``/v1/models`` listing the labels, and the playground's label picker."""

from __future__ import annotations

import pytest

pytest.importorskip(
    "fastapi", reason="server tests need the serve extra: pip install lstmgen[serve]"
)
pytest.importorskip("httpx", reason="server tests need httpx (pip install httpx)")

import torch  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from lstmgen import LanguageModel, ModelConfig, TrainConfig, Trainer  # noqa: E402
from lstmgen.generate import stream_text  # noqa: E402
from lstmgen.server.app import create_app  # noqa: E402
from lstmgen.tokenizers import CharTokenizer  # noqa: E402

LOCAL = "http://127.0.0.1:8000"
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def labelled_run(tmp_path_factory):
    torch.set_num_threads(1)  # module fixtures run before conftest's autouse one
    root = tmp_path_factory.mktemp("lab")
    for label, line in (("comedy", "ha ha ha ha\n"), ("tragedy", "woe woe is me\n")):
        (root / "c" / label).mkdir(parents=True)
        for i in range(3):
            (root / "c" / label / f"{i}.txt").write_text(line * 3)
    cfg = TrainConfig(
        labels_from="folders", max_steps=80, batch_size=4, seq_len=16, eval_every=80, lr=2e-2,
        sample_tokens=0, device="cpu",
    )  # fmt: skip
    model_cfg = ModelConfig(embedding_size=16, hidden_size=32, num_layers=1)
    Trainer.create(root / "run", [root / "c"], cfg, model_cfg).fit()
    return root / "run"


@pytest.fixture(scope="module")
def client(labelled_run):
    app = create_app(LanguageModel.from_pretrained(labelled_run), "tiny")
    with TestClient(app, base_url=LOCAL, raise_server_exceptions=False) as c:
        yield c


def _complete(client, **body):
    return client.post("/v1/completions", json={"prompt": "", "max_tokens": 12, **body})


def test_label_field_steers_like_the_library(client, labelled_run):
    model = LanguageModel.from_pretrained(labelled_run)
    assert client.get("/v1/models").json()["data"][0]["labels"] == ["comedy", "tragedy"]
    for label in ("comedy", "tragedy"):
        r = _complete(client, label=label, temperature=0)
        assert r.status_code == 200, r.text
        want = "".join(e.text for e in stream_text(model, [""], label=label, temperature=0,
                                                   max_new_tokens=12))  # fmt: skip
        assert r.json()["choices"][0]["text"] == want
    assert "ha" in _complete(client, label="comedy", temperature=0).json()["choices"][0]["text"]


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"label": "drama"}, "label", "unknown label 'drama': known labels are comedy, tragedy"),
        ({"label": 3}, "label", "label must be a string"),
        ({"features": [1.0]}, "features", "this model takes no feature vectors"),
        ({"features": "x"}, "features", "features must be a non-empty list of numbers"),
        ({"features": [10**400]}, "features", "features holds a number too large for a float"),
    ],
)
def test_bad_conditioning_is_a_400(client, body, param, message):
    r = _complete(client, **body)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == param and err["message"] == message


def test_features_field(tmp_path):
    cfg = ModelConfig(vocab_size=5, embedding_size=4, hidden_size=6, num_layers=1, feature_size=2)
    model = LanguageModel(cfg, CharTokenizer(list("abcd\n")))
    app = create_app(model, "tiny")
    with TestClient(app, base_url=LOCAL, raise_server_exceptions=False) as c:
        assert c.get("/v1/models").json()["data"][0]["feature_size"] == 2
        for vec in ([1.0, -1.0], [-3.0, 2.0]):
            r = _complete(c, features=vec, temperature=0)
            want = "".join(e.text for e in stream_text(model, [""], features=vec, temperature=0,
                                                       max_new_tokens=12))  # fmt: skip
            assert r.status_code == 200 and r.json()["choices"][0]["text"] == want
        bad = _complete(c, features=[1.0, 2.0, 3.0])
        assert bad.status_code == 400 and "has 3 numbers; the model takes 2" in bad.text
        nan = c.post("/v1/completions", content='{"prompt": "", "features": [NaN, 1]}',
                     headers=JSON)  # fmt: skip
        assert nan.status_code == 400 and "NaN" in nan.json()["error"]["message"]


@pytest.mark.slow  # a second server and a browser; the unlabelled page's check is in the suite
def test_playground_label_picker_in_headless_chromium(labelled_run, client):
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright")
    from test_server_e2e import Server, _chromium

    if not _chromium():
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    want = _complete(client, label="tragedy", temperature=0, max_tokens=20).json()
    server = Server(labelled_run)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=_chromium(), headless=True, args=["--no-sandbox"]
            )
            try:
                page = browser.new_page()
                page.goto(server.url + "/")
                page.wait_for_selector("#keybox:not([hidden])")
                page.fill("#apikey", "e2e-secret")
                page.evaluate("loadModel()")  # with the key, the model card and its labels
                page.wait_for_selector("#labelbox:not([hidden])")
                options = page.eval_on_selector_all("#label option", "os => os.map(o => o.value)")
                page.select_option("#label", "tragedy")
                page.evaluate(
                    "() => { const t = document.querySelector('#temperature');"
                    " t.value = 0; t.dispatchEvent(new Event('input')); }"
                )
                page.locator("#max_tokens").fill("20")
                page.click("#generate")
                page.wait_for_function(
                    "document.querySelector('#status').textContent.startsWith('done')",
                    timeout=30000,
                )
                text = page.inner_text("#output .text")
            finally:
                browser.close()
    finally:
        server.stop()
    assert options == ["", "comedy", "tragedy"]
    assert text == want["choices"][0]["text"] and "woe" in text
