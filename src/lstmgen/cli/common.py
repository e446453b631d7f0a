"""Options and helpers shared by the commands."""

from __future__ import annotations

import click

from ..model import LanguageModel
from ..train import resolve_device

run_argument = click.argument("run", type=click.Path())
device_option = click.option(
    "--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps."
)
unknown_option = click.option(
    "--unknown",
    type=click.Choice(["error", "drop", "replace"]),
    help="Characters (words, for word models) the model never saw: refuse, drop or replace "
    "them [error; replace (as <unk>, with a warning) for word models].",
)


def load_run(run: str, device: str) -> LanguageModel:
    return LanguageModel.from_pretrained(run, device=resolve_device(device))
