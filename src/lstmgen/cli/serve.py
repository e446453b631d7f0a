"""``lstmgen serve``: the HTTP API and the playground for one model directory."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import click

from ..errors import LstmgenError
from .common import device_option, load_run, run_argument


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _split(names: str) -> list[str]:
    return [n.strip() for n in names.split(",") if n.strip()]


def _bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket ourselves, so ``--port 0`` can report the port it got."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as exc:
        raise LstmgenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    sock.listen(2048)  # connections made while the model loads wait instead of being refused
    return sock


@click.command("serve")
@run_argument
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="0 = any free port.")  # fmt: skip
@click.option(
    "--api-key",
    envvar="LSTMGEN_API_KEY",
    help="Require 'Authorization: Bearer KEY' on every request [env LSTMGEN_API_KEY].",
)
@click.option("--model-name", help="Name clients use for the model [the run folder's name].")
@click.option("--max-batch", type=click.IntRange(1, 4096), default=64, show_default=True,
              help="Sequences decoded together; more requests wait.")  # fmt: skip
@click.option("--max-prompt-tokens", type=click.IntRange(1), default=4096, show_default=True)
@click.option("--max-tokens", "max_tokens_limit", type=click.IntRange(1), default=2048,
              show_default=True, help="Largest max_tokens a request may ask for.")  # fmt: skip
@click.option("--max-n", type=click.IntRange(1), default=16, show_default=True,
              help="Most completions (prompts x n) per request.")  # fmt: skip
@click.option("--max-state-mib", type=click.IntRange(1), default=1024, show_default=True,
              help="Most model state (MiB) a request's completions carry together: an "
              "attention model's memory (sha-lstm).")  # fmt: skip
@click.option(
    "--stream-interval",
    type=click.FloatRange(0, 1),
    default=0.05,
    show_default=True,
    help="Seconds between a stream's events; tokens made meanwhile share one (0 = every token).",
)
@click.option(
    "--allowed-hosts",
    default="",
    help="Host names clients may use besides localhost and the bound address (comma list, * ="
    " any): a reverse proxy's name. Others are refused, which stops DNS rebinding.",
)
@click.option(
    "--cors-origins",
    default="",
    help="Web origins (https://app.example, comma list, * = any) whose pages may call the API;"
    " other pages' requests are refused.",
)
@click.option(
    "--read-timeout",
    type=click.FloatRange(0.01),
    default=15.0,
    show_default=True,
    help="Seconds a client gets to send a request's headers, and again its body.",
)
@click.option(
    "--keep-alive-timeout",
    type=click.FloatRange(0.01),
    default=5.0,
    show_default=True,
    help="Seconds an idle connection stays open between requests.",
)
@click.option("--max-connections", type=click.IntRange(1), default=1000, show_default=True,
              help="Open connections at most; more are answered 503 and closed.")  # fmt: skip
@click.option(
    "--threads",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="PyTorch CPU threads. Each decode step is a few small operations: on a CPU one thread"
    " is fastest (benchmarks/load_server.py); more help only large models or batches. Batches"
    " under 128 step through NumPy, whose BLAS threads follow OPENBLAS_NUM_THREADS.",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
)
@device_option
@click.option(
    "--backend",
    type=click.Choice(["torch", "onnx"]),
    default="torch",
    show_default=True,
    help="onnx: serve a folder from `lstmgen export --format onnx`, or an int8 directory"
    " (`lstmgen quantize`), with onnxruntime computing every step (pip install lstmgen[onnx]);"
    " CPU only, prompts primed a token at a time. An int8 directory on the torch backend already"
    " steps through onnxruntime's int8 graph where it is installed.",
)
def serve_command(
    run: str,
    host: str,
    port: int,
    api_key: str | None,
    model_name: str | None,
    max_batch: int,
    max_prompt_tokens: int,
    max_tokens_limit: int,
    max_n: int,
    max_state_mib: int,
    stream_interval: float,
    allowed_hosts: str,
    cors_origins: str,
    read_timeout: float,
    keep_alive_timeout: float,
    max_connections: int,
    threads: int,
    log_level: str,
    device: str,
    backend: str,
) -> None:
    """Serve the model in RUN over HTTP: an OpenAI-compatible completions API and a playground.

    \b
      lstmgen serve runs/poems                      # http://127.0.0.1:8000/
      lstmgen serve runs/poems --port 9000 --api-key secret
      lstmgen serve runs/poems --cors-origins https://app.example
    """
    try:
        import uvicorn

        from ..server.app import create_app
        from ..server.connections import uvicorn_config
        from ..server.protocol import Limits
    except ImportError as exc:
        raise click.ClickException(
            f"the server needs the serve extra ({exc.name} is missing): "
            "pip install 'lstmgen[serve]'"
        ) from None
    import torch

    torch.set_num_threads(threads)
    if backend == "onnx":
        if device not in ("auto", "cpu"):
            raise click.UsageError("--device applies to --backend torch only")
        from ..export.onnx_served import OnnxServedModel

        model = OnnxServedModel(run, threads=threads)
    else:
        model = load_run(run, device)
    name = model_name or Path(run).resolve().name
    weights = Path(run) / "model.safetensors"
    sock = _bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    app = create_app(
        model,
        name,
        api_key=api_key or None,
        limits=Limits(
            max_prompt_tokens=max_prompt_tokens,
            max_tokens=max_tokens_limit,
            max_choices=max_n,
            max_state_mib=max_state_mib,
        ),
        max_batch=max_batch,
        stream_interval=stream_interval,
        created=int(weights.stat().st_mtime) if weights.exists() else None,
        read_timeout=read_timeout,
        allowed_hosts=_split(allowed_hosts),
        cors_origins=_split(cors_origins),
        bound_host=host,
    )
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    click.echo(
        f"serving {run} as {name!r} on http://{shown}:{bound_port}/ (playground at /, API at "
        f"/v1){' with an API key' if api_key else ''}",
        err=True,
    )
    if not _is_loopback(host) and not api_key:
        click.echo("warning: listening beyond this machine without --api-key", err=True)
    config = uvicorn_config(
        app,
        read_timeout=read_timeout,
        keep_alive=keep_alive_timeout,
        max_connections=max_connections,
        log_level=log_level,
    )
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
