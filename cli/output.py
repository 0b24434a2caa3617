"""What every command shares: one-line user errors with exit codes, JSON or text output, progress."""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from typing import Any, Callable, NoReturn, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from nmc.codec.errors import NmcError

err = Console(stderr=True)
JSON_HELP = "Print machine-readable JSON on stdout (on stderr when the data goes to stdout)."
FORCE_HELP = "Overwrite existing files (never directories)."
CLOSED_PIPE = 141  # the status of a process killed by SIGPIPE: what `cmd | head` expects, without a message


class Terminated(KeyboardInterrupt):
    """SIGTERM: unwind like Ctrl-C (temporary outputs are removed), then exit 143."""


def fatal(message: str, code: int = 1) -> NoReturn:
    err.print(f"nmc: error: {' '.join(message.split())}", markup=False, highlight=False, soft_wrap=True)
    raise SystemExit(code)


def stopped(e: KeyboardInterrupt) -> NoReturn:
    if isinstance(e, Terminated):
        fatal("terminated", 143)
    fatal("interrupted", 130)


def closed_pipe() -> NoReturn:
    """The reader of stdout went away (`nmc ... | head`): not an error, so no message."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
    raise SystemExit(CLOSED_PIPE)


F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Turn user errors into one line on stderr and exit code 1 (before click sees EOFError)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except NmcError as e:
            fatal(str(e))
        except BrokenPipeError:
            closed_pipe()
        except (OSError, MemoryError) as e:
            fatal(f"{type(e).__name__}: {e}")
        except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: `finally` blocks have removed temporary outputs
            stopped(e)

    return wrapper  # type: ignore[return-value]


def _finite(x: Any) -> Any:
    """JSON has no NaN or infinity: they become null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def emit(data: Any, as_json: bool, text: str, data_on_stdout: bool = False) -> None:
    """JSON on stdout, or on stderr when stdout carries the data (`-o -`); text on stderr."""
    if as_json:
        out = sys.stderr if data_on_stdout else sys.stdout
        print(json.dumps(_finite(data), indent=2, allow_nan=False), file=out, flush=True)
    elif str(text):
        err.print(text, markup=False, highlight=False, soft_wrap=True)


def progress(eta: bool = False) -> Progress:
    """A transient progress bar on stderr (shown only on a terminal); `eta` adds the time remaining."""
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()] + ([TimeRemainingColumn()] if eta else [])
    return Progress(*columns, console=err, transient=True, disable=not err.is_terminal)
