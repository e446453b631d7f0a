"""Load benchmark of ``lstmgen serve``: N concurrent streaming clients against a local server.

A 2x256 character LSTM (the default model size; random weights: this measures throughput, not
text) is served by the real ``lstmgen serve`` process on a free loopback port. For each N in
1, 8, 32, N clients each send streaming completion requests back to back for a fixed time
(max_tokens drawn from 32..96, so requests do not run in lockstep); requests still running
then finish and count. Reported per N: requests/s, tokens/s, latency
(whole request) and time to first token p50/p99, errors, and the server's mean batch size.
The headline is the ratio of total tokens/s at 32 clients to 1 client, measured in one run.

Also measured, without HTTP: the decode loop alone (``Batcher``) with 1 and 32 sequences, the
ceiling the server approaches.

    .venv/bin/python benchmarks/load_server.py            # about 90 s
    .venv/bin/python benchmarks/load_server.py --seconds 5 --clients 1 8   # a quick look

Loopback only; every phase is bounded in time and each request in tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from common import SHARED_DATA, write_result

from lstmgen import LanguageModel, ModelConfig
from lstmgen.server.batcher import Batcher, SequenceSpec
from lstmgen.server.rows import RowSettings
from lstmgen.tokenizers import CharTokenizer

PROMPTS = ["ROMEO:", "JULIET:\nO Romeo, ", "First Citizen:\n", "KING HENRY:\nOnce more"]


def make_model(out: Path) -> LanguageModel:
    """The default model size with random weights, over tiny-shakespeare's characters."""
    corpus = SHARED_DATA / "tiny-shakespeare" / "input.txt"
    text = corpus.read_text(encoding="utf-8") if corpus.exists() else ""
    tok = CharTokenizer.fit([text + "".join(map(chr, range(32, 127))) + "\n"])
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=256)  # 2x256, embedding 64
    model = LanguageModel(cfg, tok)
    model.save_pretrained(out)
    return model


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


class ServerProcess:
    """A server subprocess, started by ``cmd``, ready once a line of its stderr names its URL
    (``serving ... http://HOST:PORT/``); the rest of its stderr is passed on."""

    def __init__(self, cmd: list[str], env: dict[str, str] | None = None):
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
        self.url = ""
        ready = threading.Event()

        def read() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                found = re.search(r"(http://\S+?)/?(\s|$)", line)
                if line.startswith("serving ") and found and not self.url:
                    self.url = found.group(1)
                    ready.set()
                else:
                    sys.stderr.write("server: " + line)

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(120):
            self.stop()
            raise SystemExit("the server did not start")

    @classmethod
    def lstmgen(cls, run: Path, threads: int, stream_interval: float) -> ServerProcess:
        """``lstmgen serve RUN`` on a free loopback port."""
        return cls([sys.executable, "-m", "lstmgen", "serve", str(run), "--port", "0",
                    "--log-level", "warning", "--threads", str(threads), "--device", "cpu",
                    "--stream-interval", str(stream_interval)])  # fmt: skip

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def one_request(client, url: str, max_tokens: int, rng: random.Random) -> dict:
    body = {
        "prompt": rng.choice(PROMPTS),
        "max_tokens": rng.randint(max_tokens // 2, max_tokens * 3 // 2),
        "temperature": 1.0,
        "seed": rng.randrange(2**31),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    first = None
    usage = None
    async with client.stream("POST", url + "/v1/completions", json=body) as r:
        if r.status_code != 200:
            await r.aread()
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
        done = False
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            if first is None:
                first = time.perf_counter() - t0
            data = line[6:]
            if data == "[DONE]":
                done = True
            elif '"error"' in data[:12]:
                raise RuntimeError(data[:200])
            elif '"usage": {' in data:  # only the last event is parsed: cheap for the client
                usage = json.loads(data)["usage"]
        if not done or usage is None:
            raise RuntimeError("stream ended without usage and [DONE]")
    return {
        "latency": time.perf_counter() - t0,
        "ttft": first,
        "tokens": usage["completion_tokens"],
    }


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def phase(url: str, server_pid: int, clients: int, seconds: float, max_tokens: int) -> dict:
    import httpx

    results: list[dict] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        health0 = (await client.get(url + "/health")).json()
        cpu0 = process_cpu(server_pid), time.process_time()
        start = time.perf_counter()
        stop_at = start + seconds

        async def worker(i: int) -> None:
            rng = random.Random(i)
            while time.perf_counter() < stop_at:
                try:
                    results.append(await one_request(client, url, max_tokens, rng))
                except Exception as exc:  # counted, and the phase goes on
                    errors.append(f"{type(exc).__name__}: {exc}")

        await asyncio.gather(*(worker(i) for i in range(clients)))
        wall = time.perf_counter() - start
        cpu1 = process_cpu(server_pid), time.process_time()
        health1 = (await client.get(url + "/health")).json()
    tokens = sum(r["tokens"] for r in results)
    steps = health1["steps"] - health0["steps"]
    lat = [r["latency"] for r in results]
    ttft = [r["ttft"] for r in results]
    return {
        "clients": clients,
        "seconds": round(wall, 3),
        "requests": len(results),
        "errors": len(errors),
        "error_samples": errors[:3],
        "requests_per_s": len(results) / wall,
        "tokens_per_s": tokens / wall,
        "tokens": tokens,
        "latency_p50_s": percentile(lat, 50),
        "latency_p99_s": percentile(lat, 99),
        "ttft_p50_s": percentile(ttft, 50),
        "ttft_p99_s": percentile(ttft, 99),
        "server_steps": steps,
        "mean_batch": (health1["tokens_generated"] - health0["tokens_generated"]) / max(steps, 1),
        "server_cpu_s": cpu1[0] - cpu0[0],
        "client_cpu_s": cpu1[1] - cpu0[1],
    }


def engine(model: LanguageModel, rows: int, seconds: float, max_tokens: int) -> dict:
    """Tokens/s of the decode loop alone, ``rows`` sequences kept in flight."""
    torch.set_num_threads(1)
    batcher = Batcher(model, max_batch=max(rows, 1))
    batcher.start()
    tok = model.tokenizer
    prompt = (tok.bos_id, *tok.encode(PROMPTS[0]))
    lock = threading.Condition()
    finished = [0]
    stop_at = time.perf_counter() + seconds

    def submit(i: int) -> None:
        def sink(chunks):
            if any(c.finish_reason for c in chunks):
                with lock:
                    finished[0] += 1
                    lock.notify()
                if time.perf_counter() < stop_at:
                    submit(i + rows)

        spec = SequenceSpec(prompt, max_tokens, RowSettings(temperature=1.0), seed=i)
        batcher.submit([spec], sink)

    t0 = time.perf_counter()
    tokens0 = batcher.tokens
    for i in range(rows):
        submit(i)
    with lock:
        while time.perf_counter() < stop_at or batcher.active or batcher.queued:
            lock.wait(0.05)
    wall = time.perf_counter() - t0
    tokens = batcher.tokens - tokens0
    batcher.close()
    return {"sequences": rows, "tokens_per_s": tokens / wall, "steps": batcher.steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--seconds", type=float, default=20.0, help="per phase")
    ap.add_argument(
        "--max-tokens", type=int, default=64, help="mean per request (drawn from 0.5x..1.5x)"
    )
    ap.add_argument("--threads", type=int, default=1, help="the server's --threads")
    ap.add_argument("--stream-interval", type=float, default=0.05, help="the server's option")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    if max(args.clients) > 64 or args.seconds > 60:
        raise SystemExit("bounded: at most 64 clients and 60 s per phase")
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "lstm-2x256-random"
        model = make_model(run)
        load = os.getloadavg()
        server = ServerProcess.lstmgen(run, args.threads, args.stream_interval)
        try:
            asyncio.run(phase(server.url, server.proc.pid, 4, 2.0, args.max_tokens))  # warm up
            phases = []
            for n in args.clients:
                res = asyncio.run(
                    phase(server.url, server.proc.pid, n, args.seconds, args.max_tokens)
                )
                phases.append(res)
                print(
                    f"{n:3d} clients: {res['requests_per_s']:7.2f} req/s "
                    f"{res['tokens_per_s']:8.0f} tok/s  p50 {res['latency_p50_s']:.3f}s "
                    f"p99 {res['latency_p99_s']:.3f}s  ttft p50 {res['ttft_p50_s']:.3f}s  "
                    f"errors {res['errors']}  mean batch {res['mean_batch']:.1f}  cpu server "
                    f"{res['server_cpu_s']:.1f}s client {res['client_cpu_s']:.1f}s",
                    flush=True,
                )
        finally:
            server.stop()
        engines = [engine(model, rows, 5.0, args.max_tokens) for rows in (1, 32)]
        for e in engines:
            print(
                f"decode loop alone, {e['sequences']:2d} sequences: {e['tokens_per_s']:8.0f} tok/s"
            )
    by_n = {p["clients"]: p for p in phases}
    ratio = by_n[32]["tokens_per_s"] / by_n[1]["tokens_per_s"] if 1 in by_n and 32 in by_n else None
    if ratio is not None:
        print(f"total tokens/s, 32 clients / 1 client: {ratio:.2f}x")
    payload = {
        "model": "LSTM 2x256, embedding 64, char vocabulary, random weights",
        "parameters": model.num_parameters(),
        "settings": {
            "seconds_per_phase": args.seconds,
            "max_tokens": f"uniform {args.max_tokens // 2}..{args.max_tokens * 3 // 2}",
            "server_threads": args.threads,
            "server_stream_interval": args.stream_interval,
            "stream": True,
            "temperature": 1.0,
            "loadavg_at_start": load,
        },
        "phases": phases,
        "tokens_per_s_ratio_32_vs_1": ratio,
        "decode_loop_only": engines,
        "decode_loop_ratio_32_vs_1": engines[1]["tokens_per_s"] / engines[0]["tokens_per_s"],
        "total_errors": sum(p["errors"] for p in phases),
    }
    if not args.no_write:
        print(write_result("load_server", payload))
    if payload["total_errors"]:
        raise SystemExit(f"{payload['total_errors']} errors")


if __name__ == "__main__":
    main()
