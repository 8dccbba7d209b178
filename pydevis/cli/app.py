"""The typer app, shared options and the error boundary (one line, non-zero exit code)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from .. import __version__
from ..errors import PydevisError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,  # click's plain help: no <bool>, no mid-word wraps
                  help="What an ONNX image classifier has learned: deconvnet, guided backprop "
                       "and activation maximization, and how faithful each picture is.")

# typer >= 0.2x writes an argument's Python type after its metavar in the help ("MODEL <str>");
# the metavars say what to give, so the type is left out.
if hasattr(typer.core, "TyperArgument") and hasattr(typer.core.TyperArgument,
                                                    "display_type_rich"):
    _argument: Any = typer.core.TyperArgument  # a class attribute, replaced on purpose
    _argument.display_type_rich = lambda self, ctx: None

if TYPE_CHECKING:
    class _ClickError(Exception):  # what is used of click's ClickException
        def format_message(self) -> str: ...


# click's usage-error base class, wherever this typer takes click from (typer >= 0.2x vendors
# it as typer._click, older typer depends on click): found through a class typer exports.
_CLICK_ERROR = cast("type[_ClickError]", next(c for c in typer.BadParameter.__mro__
                                              if c.__name__ == "ClickException"))

# exit codes scripts can rely on
EXIT_USER = 2  # bad input: file, model, argument
EXIT_INTERNAL = 1


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pydevis {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False):
    """pydevis command line."""


SizeOpt = Annotated[str | None, typer.Option(
    "--size", metavar="H,W",
    help="Input size H,W (or one number).  [default: the card's, else the model's]")]
BgrOpt = Annotated[bool, typer.Option(
    "--bgr", help="The model takes BGR channel order.  [default: the card's, else RGB]")]
MeanOpt = Annotated[str | None, typer.Option(
    "--mean", metavar="R,G,B",
    help="Mean pixel, 0..255, e.g. 123.7,116.3,103.5  [default: the card's, the model's "
         "metadata, else ImageNet's]")]
StdOpt = Annotated[str | None, typer.Option(
    "--std", metavar="R,G,B",
    help="Std in pixel units, e.g. 58.4,57.1,57.4  [default: the card's, the model's "
         "metadata, else ImageNet's]")]
CardOpt = Annotated[str | None, typer.Option(
    "--card", metavar="FILE",
    help="Model card to read instead of MODEL.onnx.json (preprocessing, labels and the "
         "settings `pydevis tune` wrote).  [default: MODEL.onnx.json if present]")]
LabelsOpt = Annotated[str | None, typer.Option(
    "--labels", metavar="FILE",
    help="Labels file, one per line.  [default: the card's, else class_0, class_1...]")]
JsonOpt = Annotated[bool, typer.Option(
    "--json", help="Print the result as JSON (with --quiet too), with every file written.")]
QuietOpt = Annotated[bool, typer.Option(
    "--quiet", "-q", help="No progress and no text output, errors only (--json still prints).")]


MAX_SIDE = 1_000_000  # --size: whole numbers up to this; preprocess bounds the input area


def _floats(text: str | None, what: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise PydevisError(f"--{what}: expected comma-separated numbers, got {text!r}") from None


def load_model(path: str, size: str | None = None, bgr: bool = False, mean: str | None = None,
               std: str | None = None, labels: str | None = None, card: str | None = None):
    """``pydevis.load`` with the preprocessing flags (and ``--card``: another model card)."""
    from .. import load

    sz = _floats(size, "size")
    if sz is not None and (len(sz) not in (1, 2)
                           or not all(v.is_integer() and 1 <= v <= MAX_SIDE for v in sz)):
        raise PydevisError(f"--size: expected H,W (or one number), whole numbers in "
                           f"1..{MAX_SIDE}, got {size!r}")
    return load(path, size=[int(s) for s in sz] if sz else None,
                channels="BGR" if bgr else None, mean=_floats(mean, "mean"),
                std=_floats(std, "std"), labels=labels, card=card)


def emit(data: Any, as_json: bool, quiet: bool, text: str) -> None:
    """Print ``data`` as JSON with --json (--quiet or not: scripts want it), else ``text``
    unless --quiet."""
    if quiet and not as_json:
        return
    typer.echo(json.dumps(data, indent=1, default=str) if as_json else text)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2."""
    from . import (  # noqa: F401  (the commands)
        ascent_cmds,
        eval_cmds,
        export_cmds,
        model_cmds,
        serve_cmds,
        tune_cmds,
        vis_cmds,
    )

    if len(sys.argv) == 1:  # bare `pydevis`: the help, and success
        sys.argv.append("--help")

    try:
        rv = app(standalone_mode=False)
        if isinstance(rv, int) and rv:
            sys.exit(rv)
    except PydevisError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USER)
    except (ValueError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USER)
    except OSError as exc:
        typer.echo(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), err=True)
        sys.exit(EXIT_USER)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(EXIT_INTERNAL)
    except _CLICK_ERROR as exc:  # usage errors: unknown option, bad value, missing argument
        typer.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(EXIT_USER)
