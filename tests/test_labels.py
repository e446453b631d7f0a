"""Conditioning on labels (issue #13): special tokens, labelled corpora, --label."""

from __future__ import annotations

import json

import pytest

from lstmgen.errors import TokenizerError
from lstmgen.tokenizers import fit_tokenizer, label_token, tokenizer_from_dict

KINDS = ["char", "byte", "word", "bpe"]
TEXT = "the cat sat\non the mat <|label:a|>\n"


@pytest.mark.parametrize("kind", KINDS)
def test_special_tokens_follow_the_vocabulary_and_round_trip(kind):
    tok = fit_tokenizer(kind, [TEXT], vocab_size=300)
    plain = json.dumps(tok.to_dict())
    n = tok.vocab_size
    assert "specials" not in tok.to_dict()  # old model directories write back unchanged
    tok.add_specials([label_token("a"), label_token("b")])
    assert tok.vocab_size == n + 2 and tok.labels == ["a", "b"]
    back = tokenizer_from_dict(json.loads(json.dumps({"type": kind, **tok.to_dict()})))
    assert back.to_dict() == tok.to_dict() and back.vocab_size == n + 2
    assert back.label_id("a") == n and back.label_id("b") == n + 1
    # no text encodes to a special id, even the token's own spelling; decoding shows nothing
    ids = back.encode("the mat <|label:a|>\n")
    assert max(ids) < n
    assert back.decode([n, *ids, n + 1]) == back.decode(ids)
    assert json.dumps(fit_tokenizer(kind, [TEXT], vocab_size=300).to_dict()) == plain


def test_unknown_label_lists_the_known_ones():
    tok = fit_tokenizer("char", [TEXT]).add_specials([label_token("comedy"), label_token("x")])
    with pytest.raises(TokenizerError, match="unknown label 'drama': known labels are comedy, x"):
        tok.label_id("drama")


@pytest.mark.parametrize(
    "specials", [["<|label:a|>", "<|label:a|>"], ["label:a"], ["<|label:a b|>"], []]
)
def test_malformed_specials_are_refused(specials):
    data = {"type": "char", "chars": ["a", "b"], "replacement": "a", "specials": specials}
    with pytest.raises(TokenizerError, match="malformed char tokenizer"):
        tokenizer_from_dict(data)


# --- labelled corpora, end to end ---------------------------------------------------------------


def _folders(root, extra_top=None):
    for label, line in (("comedy", "ha ha ha ha\nhe he he\n"), ("tragedy", "woe woe is me\n")):
        (root / label).mkdir(parents=True)
        for i in range(3):
            (root / label / f"{i}.txt").write_text(line * 2, encoding="utf-8")
    if extra_top is not None:
        (root / "loose.txt").write_text(extra_top, encoding="utf-8")
    return root


def _train(run_cli, tmp_path, source, *flags):
    out = tmp_path / "run"
    args = ["train", source, "-o", out, "--max-steps", "150", "--batch-size", "4"]
    args += ["--seq-len", "16", "--embedding-size", "16", "--hidden-size", "32"]
    args += ["--num-layers", "1", "--eval-every", "150", "--sample-tokens", "0", "-q", *flags]
    return out, run_cli(*args)


def test_labels_from_folders_steer_generation_and_show_in_info(run_cli, tmp_path):
    out, res = _train(run_cli, tmp_path, _folders(tmp_path / "c"), "--labels-from", "folders")
    assert res.code == 0, res.err
    assert json.loads((out / "labels.json").read_text()) == {"train": {"comedy": 3, "tragedy": 3}}
    info = run_cli("info", out, "--json")
    assert json.loads(info.out)["labels"] == {"comedy": 3, "tragedy": 3}
    assert "labels:     comedy (3), tragedy (3)" in run_cli("info", out).out
    gen = {
        label: run_cli("generate", out, "--label", label, "-t", "0", "--max-new-tokens", "12").out
        for label in ("comedy", "tragedy")
    }
    assert "ha" in gen["comedy"] and "woe" not in gen["comedy"]
    assert "woe" in gen["tragedy"] and "ha" not in gen["tragedy"]
    bad = run_cli("generate", out, "--label", "drama")
    assert bad.code != 0
    assert bad.err.strip() == "error: unknown label 'drama': known labels are comedy, tragedy"
    from lstmgen import LanguageModel

    model = LanguageModel.from_pretrained(out)
    text = "".join(model.generate("", label="comedy", temperature=0, max_new_tokens=12))
    assert text + "\n" == gen["comedy"]


def test_unlabelled_documents_are_an_error_unless_named(run_cli, tmp_path):
    src = _folders(tmp_path / "c", extra_top="plain text\n")
    out, res = _train(run_cli, tmp_path, src, "--labels-from", "folders", "--max-steps", "2")
    assert res.code != 0 and "loose.txt has no label but other documents do" in res.err
    assert "--unlabelled-as" in res.err and not out.exists()
    out, res = _train(
        run_cli, tmp_path, src, "--labels-from", "folders", "--unlabelled-as", "plain",
        "--max-steps", "2",
    )  # fmt: skip
    assert res.code == 0, res.err
    assert json.loads((out / "labels.json").read_text())["train"]["plain"] == 1


def _jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"text": "a", "label": "x"}, "{not json"], "docs.jsonl:2: not valid JSON"),
        ([{"text": "a", "label": "x"}, {"label": "x"}], "docs.jsonl:2: expected an object with"),
        ([{"text": "a", "label": "x"}, {"text": "b"}], "docs.jsonl:2 has no label but other"),
        ([{"text": "a", "label": "x y"}], "invalid label name 'x y'"),
        ([{"text": "say <|label:x|> now", "label": "x"}], "spells out the label token"),
        ([{"text": "a", "label": 3}], 'docs.jsonl:1: "label" must be a string'),
    ],
)
def test_bad_labelled_jsonl_is_one_clear_line(run_cli, tmp_path, rows, message):
    src = _jsonl(tmp_path / "docs.jsonl", rows)
    _, res = _train(run_cli, tmp_path, src, "--labels-from", "jsonl", "--max-steps", "2")
    assert res.code != 0 and message in res.err
    assert res.err.startswith("error: ") and "Traceback" not in res.err


def test_labels_from_jsonl_train_and_word_tokenizer(run_cli, tmp_path):
    rows = [{"text": f"{w} {w} {w}", "label": lab} for w, lab in [("up", "a"), ("down", "b")] * 6]
    src = _jsonl(tmp_path / "docs.jsonl", rows)
    out, res = _train(
        run_cli, tmp_path, src, "--labels-from", "jsonl", "--tokenizer", "word", "--max-steps", "5"
    )
    assert res.code == 0, res.err
    from lstmgen import LanguageModel

    tok = LanguageModel.from_pretrained(out).tokenizer
    assert tok.labels == ["a", "b"] and tok.vocab_size == len(tok.words) + 2


@pytest.mark.slow  # three (tiny) trainings in a subprocess
def test_labels_steer_benchmark_smoke(tmp_path):
    from conftest import SHARED_DATA, benchmark_result

    if not (SHARED_DATA / "wikitext-2").is_dir():
        pytest.skip("needs ../shared/data")
    r = benchmark_result(
        tmp_path, "labels_steer.py", "--budget", "1", "--chars", "5000", "--val-chars", "1000",
        "--samples", "3", "--sample-tokens", "20", "--preset", "tiny", "--name", "smoke",
    )  # fmt: skip
    assert set(r["labels"]) == {"shakespeare", "wikitext"} and "machine" in r
    for v in r["labels"].values():
        assert sum(v["classified"].values()) == 3 and v["val_loss_alone"] > 0
        assert {"right", "wrong"} <= set(v["label_effect"]) and 0 <= v["classifier_on_val"] <= 1


@pytest.mark.parametrize("kind", ["char", "byte"])
def test_no_text_encodes_to_a_special_id(kind):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    tok = fit_tokenizer(kind, [TEXT]).add_specials([label_token("a"), label_token("b")])

    @settings(max_examples=200, deadline=None)
    @given(st.text(alphabet=st.sampled_from(list(TEXT) + ["<", "|", ">", "é"]), max_size=40))
    def check(text):
        assert all(i < tok.text_vocab_size for i in tok.encode(text, unknown="replace"))

    check()
