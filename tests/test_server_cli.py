"""``lstmgen serve``'s user errors: one line on stderr, no traceback."""

import sys

import pytest


def test_serve_refuses_a_missing_run(run_cli, tmp_path):
    pytest.importorskip("uvicorn", reason="without the serve extra, serve says so first")
    r = run_cli("serve", tmp_path / "nope")
    assert r.code == 1 and r.err.startswith("error: ") and r.err.count("\n") == 1
    assert "nope" in r.err


def test_serve_without_the_extra_says_how_to_install(run_cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if not installed
    r = run_cli("serve", tmp_path)
    assert r.code == 1
    assert r.err == (
        "error: the server needs the serve extra (uvicorn is missing): "
        "pip install 'lstmgen[serve]'\n"
    )


def test_serve_help_shows_the_loopback_default(run_cli):
    r = run_cli("serve", "--help")
    assert r.code == 0 and "127.0.0.1" in r.out and "LSTMGEN_API_KEY" in r.out


def test_serve_help_shows_the_connection_and_origin_options(run_cli):
    r = run_cli("serve", "--help")
    for option in ("--allowed-hosts", "--cors-origins", "--read-timeout", "--keep-alive-timeout",
                   "--max-connections"):  # fmt: skip
        assert option in r.out, option
