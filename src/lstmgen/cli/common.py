"""Options and helpers shared by the commands.

The CLI imports torch (and the library modules built on it) only inside the command functions:
torch alone takes over a second to import, and ``lstmgen --help`` should answer at once (#10).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from ..model import LanguageModel

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
    from ..export.onnx_runtime import is_onnx_folder
    from ..model import LanguageModel
    from ..runtime import resolve_device

    if is_onnx_folder(run):
        raise click.UsageError(
            f"{run} is an ONNX export: decode it with `lstmgen generate {run} --backend onnx`"
            " (eval and serve take the model directory it was exported from)"
        )

    return LanguageModel.from_pretrained(run, device=resolve_device(device))
