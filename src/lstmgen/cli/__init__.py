"""The ``lstmgen`` command line: thin adapters over the library.

Library errors become one line on stderr (``error: ...``) and exit code 1; usage errors exit 2;
Ctrl-C exits 130. Warnings are one ``warning: ...`` line. A traceback means a bug in lstmgen.
"""

from __future__ import annotations

import sys
import warnings

import click

from ..errors import LstmgenError
from .distill import distill_command
from .evaluate import eval_command
from .export import export_command
from .generate import generate_command
from .info import info_command
from .quantize import quantize_command
from .serve import serve_command
from .train import train_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lstmgen")
def cli() -> None:
    """Train recurrent language models on your own text and generate from them."""


cli.add_command(train_command)
cli.add_command(generate_command)
cli.add_command(eval_command)
cli.add_command(info_command)
cli.add_command(serve_command)
cli.add_command(quantize_command)
cli.add_command(export_command)
cli.add_command(distill_command)


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    click.echo(f"warning: {message}", err=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_line  # one line, like the errors
            cli.main(args=argv, prog_name="lstmgen", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        return 0
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        return 2
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        return exc.exit_code
    except (click.Abort, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        return 130
    except LstmgenError as exc:
        click.echo(f"error: {exc}", err=True)
        return 1
    except BrokenPipeError:
        sys.stderr.close()  # output piped into `head`: not an error
        return 0
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        click.echo(f"error: {exc.strerror or exc}{where}", err=True)
        return 1
    return 0
