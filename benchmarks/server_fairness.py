"""Fairness of ``lstmgen serve``: one streaming client's token gaps while another client sends the
worst requests the server's limits allow (issue #10).

A 2x256 character LSTM (random weights, as load_server.py) is served on a free loopback port,
twice in one run: with prompts primed all at once on the decode thread (the old behaviour,
``Batcher(prefill_tokens=None)``) and primed in pieces between decode steps (the default). In
each, a *victim* client streams completions back to back (a short prompt, ``--victim-tokens``
each) while an *attacker* client sends, back to back, the worst request the default limits allow:
16 different prompts of 4,096 tokens (max prompt tokens x max n), the largest stop list (4
strings of 256 characters that never match) and ``--attack-tokens`` tokens each.

Reported per mode: the victim's gaps between consecutive text events of a stream (p50, p99,
max; the server batches a stream's tokens into one event per --stream-interval, 50 ms), its
tokens/s and time to first token, and the attacker's requests and tokens. The floor asked for in
issue #10: the victim's p99 gap under 250 ms on a 2-core machine, with chunked priming.

    .venv/bin/python benchmarks/server_fairness.py            # about 80 s
    .venv/bin/python benchmarks/server_fairness.py --seconds 5 --no-write   # a quick look

Loopback only; every phase is bounded in time and each request in tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import sys
import tempfile
import time
from pathlib import Path

from common import write_result
from load_server import ServerProcess, make_model, percentile

SERVE = "serve-for-benchmark"  # argv[1] of this script's server process


def serve(run: str, prefill_tokens: str, threads: int, stream_interval: float) -> None:
    """The server process: ``lstmgen serve``'s app with the batcher's priming budget set."""
    import torch
    import uvicorn

    from lstmgen import LanguageModel
    from lstmgen.server.app import create_app

    torch.set_num_threads(threads)
    model = LanguageModel.from_pretrained(run)
    app = create_app(model, "bench", stream_interval=stream_interval)
    app.state.batcher.prefill_tokens = None if prefill_tokens == "all" else int(prefill_tokens)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    print(f"serving on http://127.0.0.1:{sock.getsockname()[1]}/", file=sys.stderr, flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


def start_server(run: Path, prefill: str, threads: int, stream_interval: float) -> ServerProcess:
    cmd = [sys.executable, __file__, SERVE, str(run), prefill, str(threads), str(stream_interval)]
    # NumPy's BLAS threads as many as torch's: OpenBLAS threads left spinning after a decode
    # step slow the priming piece that follows it ~2x on a busy 2-core machine.
    return ServerProcess(cmd, env={**os.environ, "OPENBLAS_NUM_THREADS": str(threads)})


async def victim_request(client, url: str, max_tokens: int, seed: int) -> dict:
    """One streaming request: times of its text events, first token, tokens."""
    body = {"prompt": "ROMEO:", "max_tokens": max_tokens, "temperature": 1.0, "seed": seed,
            "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    t0 = time.perf_counter()
    events: list[float] = []
    usage = None
    async with client.stream("POST", url + "/v1/completions", json=body) as r:
        if r.status_code != 200:
            await r.aread()
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            if "error" in data:
                raise RuntimeError(str(data)[:200])
            if data.get("usage"):
                usage = data["usage"]
            if any(c.get("text") for c in data.get("choices", [])):
                events.append(time.perf_counter())
    if usage is None:
        raise RuntimeError("stream ended without usage")
    return {"t0": t0, "events": events, "tokens": usage["completion_tokens"]}


def attack_body(args: argparse.Namespace, rng: random.Random) -> dict:
    """16 different prompts of the most tokens allowed, 4 stop strings of 256 characters."""
    letters = "abcdefghijklmnopqrstuvwxyz ,.\n"
    prompts = ["".join(rng.choice(letters) for _ in range(args.prompt_tokens))
               for _ in range(args.choices)]  # fmt: skip
    stops = [("~" * 255) + c for c in "1234"]  # never generated
    stops[0] = "e" * 256  # one whose prefixes keep matching, so text is held back and checked
    return {"prompt": prompts, "max_tokens": args.attack_tokens, "temperature": 1.0,
            "stop": stops, "seed": rng.randrange(2**31)}  # fmt: skip


async def phase(url: str, args: argparse.Namespace) -> dict:
    import httpx

    limits = httpx.Limits(max_connections=8, max_keepalive_connections=8)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        await victim_request(client, url, 8, 0)  # warm up
        victims: list[dict] = []
        attacks: list[dict] = []
        errors: list[str] = []
        stop_at = time.perf_counter() + args.seconds
        rng = random.Random(0)
        bodies = [attack_body(args, rng) for _ in range(2)]

        async def attacker() -> None:
            i = 0
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                r = await client.post(url + "/v1/completions", json=bodies[i % len(bodies)])
                i += 1
                if r.status_code != 200:
                    errors.append(f"attack: HTTP {r.status_code}: {r.text[:200]}")
                    return
                usage = r.json()["usage"]
                attacks.append({"seconds": time.perf_counter() - t0, **usage})

        async def victim() -> None:
            await asyncio.sleep(0.5)  # the attack is under way
            seed = 1
            while time.perf_counter() < stop_at:
                try:
                    victims.append(await victim_request(client, url, args.victim_tokens, seed))
                except Exception as exc:  # counted, and the phase goes on
                    errors.append(f"victim: {type(exc).__name__}: {exc}")
                seed += 1

        start = time.perf_counter()
        await asyncio.gather(attacker(), victim())
        wall = time.perf_counter() - start
    gaps = [b - a for v in victims for a, b in zip(v["events"], v["events"][1:], strict=False)]
    ttft = [v["events"][0] - v["t0"] for v in victims if v["events"]]
    stream_s = sum(v["events"][-1] - v["t0"] for v in victims if v["events"])
    tokens = sum(v["tokens"] for v in victims)
    return {
        "seconds": round(wall, 3),
        "victim_requests": len(victims),
        "victim_tokens": tokens,
        "victim_tokens_per_s": tokens / stream_s if stream_s else None,
        "victim_gap_p50_s": percentile(gaps, 50),
        "victim_gap_p99_s": percentile(gaps, 99),
        "victim_gap_max_s": max(gaps, default=None),
        "victim_ttft_p50_s": percentile(ttft, 50),
        "victim_ttft_max_s": max(ttft, default=None),
        "attack_requests": len(attacks),
        "attack_prompt_tokens": sum(a["prompt_tokens"] for a in attacks),
        "attack_completion_tokens": sum(a["completion_tokens"] for a in attacks),
        "attack_prompt_tokens_per_s": sum(a["prompt_tokens"] for a in attacks) / wall,
        "attack_request_s_mean": sum(a["seconds"] for a in attacks) / len(attacks)
        if attacks
        else None,
        "errors": len(errors),
        "error_samples": errors[:3],
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == SERVE:
        serve(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="per mode")
    ap.add_argument("--prompt-tokens", type=int, default=4096, help="per attack prompt")
    ap.add_argument("--choices", type=int, default=16, help="prompts per attack request")
    ap.add_argument("--attack-tokens", type=int, default=16, help="max_tokens per attack")
    ap.add_argument("--victim-tokens", type=int, default=200, help="max_tokens per victim")
    ap.add_argument("--prefill-tokens", default="128", help="the chunked mode's budget")
    ap.add_argument("--threads", type=int, default=1, help="the server's torch threads")
    ap.add_argument("--stream-interval", type=float, default=0.05, help="the server's option")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    if args.seconds > 120 or args.prompt_tokens > 4096 or args.choices > 16:
        raise SystemExit("bounded: 120 s per mode, the server's default limits")
    modes = {"all_at_once": "all", "chunked": args.prefill_tokens}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "lstm-2x256-random"
        model = make_model(run)
        for mode, prefill in modes.items():
            server = start_server(run, prefill, args.threads, args.stream_interval)
            try:
                res = asyncio.run(phase(server.url, args))
            finally:
                server.stop()
            results[mode] = {"prefill_tokens": prefill, **res}
            print(
                f"{mode:12s} victim gap p50 {res['victim_gap_p50_s']:.3f}s "
                f"p99 {res['victim_gap_p99_s']:.3f}s max {res['victim_gap_max_s']:.3f}s  "
                f"{res['victim_tokens_per_s']:.0f} tok/s  ttft max {res['victim_ttft_max_s']:.2f}s"
                f"  attacks {res['attack_requests']} ({res['attack_prompt_tokens']} prompt "
                f"tokens, {res['attack_prompt_tokens_per_s']:.0f}/s)  errors {res['errors']}",
                flush=True,
            )
    old, new = results["all_at_once"], results["chunked"]
    payload = {
        "model": "LSTM 2x256, embedding 64, char vocabulary, random weights",
        "parameters": model.num_parameters(),
        "settings": {
            **{k: v for k, v in vars(args).items() if k != "no_write"},
            "server_openblas_threads": args.threads,
        },
        "attack": f"{args.choices} different prompts x {args.prompt_tokens} tokens, 4 stop "
        f"strings x 256 characters, max_tokens {args.attack_tokens}, back to back",
        "victim": f"streaming, prompt 'ROMEO:', max_tokens {args.victim_tokens}, back to back",
        "modes": results,
        "victim_gap_p99_s": {
            "all_at_once": old["victim_gap_p99_s"],
            "chunked": new["victim_gap_p99_s"],
        },
        "floor_p99_gap_s": 0.25,
        "floor_met": new["victim_gap_p99_s"] is not None and new["victim_gap_p99_s"] < 0.25,
        "total_errors": old["errors"] + new["errors"],
    }
    print(f"victim p99 gap: {old['victim_gap_p99_s']:.3f}s all at once -> "
          f"{new['victim_gap_p99_s']:.3f}s chunked (floor 0.25 s: "
          f"{'met' if payload['floor_met'] else 'NOT met'})")  # fmt: skip
    if not args.no_write:
        print(write_result("server_fairness", payload))
    if payload["total_errors"]:
        raise SystemExit(f"{payload['total_errors']} errors")


if __name__ == "__main__":
    main()
