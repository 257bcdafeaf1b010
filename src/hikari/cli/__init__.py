"""The `hikari` command: thin typer wrappers over importable functions, one module per area.

Building the CLI imports only typer, rich, the config models and a few constants: each command imports its library
code (torch, transformers, faiss, …) when it runs, so `hikari --help` and `hikari X --help` answer at once.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

import typer
import yaml

from hikari.cli import ablate as ablate_cli
from hikari.cli import data as data_cli
from hikari.cli import eval as eval_cli
from hikari.cli import model as model_cli
from hikari.cli import retrieve as retrieve_cli
from hikari.cli.cascade import cascade_command
from hikari.cli.demo import demo_command
from hikari.cli.predict import predict_command
from hikari.cli.serve import serve_command
from hikari.cli.train import merge_command, train_command
from hikari.config import DataConfig, default

app = typer.Typer(
    name="hikari",
    pretty_exceptions_enable=False,  # user errors are one line (main); bugs keep Python's plain traceback
    help="Train, evaluate and serve cascaded vision-language models for skin-lesion diagnosis and captioning.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _options(
    max_pixels: int = typer.Option(default(DataConfig, "max_pixels"), "--max-pixels", envvar="HIKARI_MAX_PIXELS",
                                   min=1, help="Largest image (width × height) any command decodes; a larger one "
                                   "is an unreadable image (a decompression bomb), refused from its header."),
    debug: bool = typer.Option(False, "--debug", envvar="HIKARI_DEBUG",
                               help="Show the traceback of an error instead of its one-line message."),
) -> None:
    if debug:
        os.environ["HIKARI_DEBUG"] = "1"
    # Through the environment: the image readers are imported later (CLI start-up time) and by child processes;
    # a process that has them already (the tests' CliRunner) is told directly.
    os.environ["HIKARI_MAX_PIXELS"] = str(max_pixels)
    images = sys.modules.get("hikari.data.images")
    if images is not None:
        images.set_max_pixels(max_pixels)


app.add_typer(data_cli.app, name="data", help="Read, synthesise, inspect, split and audit SkinCAP data.")
app.add_typer(model_cli.app, name="model", help="Build and inspect models (tiny offline Qwen3-VL).")
app.add_typer(retrieve_cli.app, name="retrieve", help="Reference retrieval (RAG): build and query hybrid indexes.")
app.add_typer(eval_cli.app, name="eval", help="Score prediction files (ours or the original HIKARI's).")
app.add_typer(ablate_cli.app, name="ablate", help="Ablations: the Stage 3 caption recipes from one Stage 2 run.")
app.command("train", help="Train one recipe (YAML or built-in name) into its run directory.")(train_command)
app.command("merge", help="Merge a run's LoRA adapter into its base model (loadable without PEFT).")(merge_command)
app.command("predict", help="Generate predictions for a split part with transformers, vLLM or SGLang.")(
    predict_command
)
app.command("cascade", help="Group → diagnosis with reference cases → guided caption, for image files.")(
    cascade_command
)
app.command("serve", help="The cascade as a local web page and HTTP API (OpenAI-compatible chat too).")(
    serve_command
)
app.command("demo", help="The whole cascade on synthetic SkinCAP and the tiny Qwen3-VL (CPU, minutes).")(
    demo_command
)


# What a user's input can cause (a bad path, value, file): one line naming it, exit 2. Anything else is a bug and
# keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, KeyError, yaml.YAMLError)


def describe_error(err: BaseException) -> str:
    """One line for a user error: its message (a KeyError's key unquoted), with a decoding error's file named."""
    if isinstance(err, KeyError) and err.args:
        return f"missing {err.args[0]}"
    if isinstance(err, UnicodeDecodeError):
        return f"not UTF-8 text: {err}"
    if isinstance(err, OSError) and err.filename is not None and err.strerror:  # "[Errno 2] No such file …: 'x'"
        return f"{err.filename}: {err.strerror.lower()}"
    message = str(err).strip() or type(err).__name__
    return " ".join(message.split()) if len(message) < 2000 else message


class _Drop(logging.Filter):
    """Drop log records whose message contains `fragment`."""

    def __init__(self, fragment: str) -> None:
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


def main() -> None:  # console-script entry point
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # bitsandbytes >= 0.50 on a CPU tries to fetch a kernel from the hub on import, fails (we allow no remote code)
    # and falls back to its own: a warning on every command that means nothing to the user.
    logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_Drop("kernels-community"))
    # PEFT reads `model.is_gradient_checkpointing`, which transformers 5 deprecates: not the user's to act on.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    # HIKARI's own progress notes (which cross-entropy ran, which engine loads what) are shown; other libraries'
    # INFO lines are not.
    logging.getLogger("hikari").setLevel(logging.INFO)
    try:
        app()
    except KeyboardInterrupt:  # Ctrl+C: stop quietly, with the conventional status
        sys.exit(130)
    except USER_ERRORS as err:
        if os.environ.get("HIKARI_DEBUG") == "1":
            raise
        print(f"error: {describe_error(err)} (hikari --debug shows the traceback)", file=sys.stderr)
        sys.exit(2)
