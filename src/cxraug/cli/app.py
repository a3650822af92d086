"""The `cxraug` command: one verb per pipeline stage, plus data, benchmark and tuning verbs (one module per
family). A user error is one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import logging
import os
import sys

import typer

# OpenMP worker threads that spin while waiting make torch 10-30x slower as soon as another process
# shares the cores (measured on 2 cores: a thin-VGG step 0.96 s spinning vs 0.08 s passive). Read once
# when torch loads, so it is set here, before any verb imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import cxraug.cli.bench  # noqa: E402, F401  (each verb module registers its verbs)
import cxraug.cli.data  # noqa: E402, F401
import cxraug.cli.stages  # noqa: E402, F401
import cxraug.cli.tune  # noqa: E402, F401
from cxraug.cli.options import app  # noqa: E402
from cxraug.core.errors import CxraugError  # noqa: E402


def end_progress() -> None:
    """Bars left open by a stage that stopped mid-loop end before the message (tqdm loaded: maybe bars)."""
    if "tqdm" in sys.modules:
        from cxraug.core.runtime import end_progress as close_bars

        close_bars()


INTERRUPTED = "interrupted: finished outputs and the last checkpoint are kept; rerun to resume"


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("mlflow", "alembic", "urllib3", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        # Not standalone: click's usage errors come back here, to be printed as one line like ours.
        status = app(standalone_mode=False)
    except CxraugError as e:
        end_progress()
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except typer.TyperException as e:  # click's errors: a bad value, a missing argument, an unknown option
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError":  # a bare `cxraug` or `cxraug download`: the help
            typer.echo(e.format_message(), err=True)
        else:
            hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
            typer.echo(f"error: {e.format_message()}{hint}", err=True)
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        status = 130
    else:
        status = status if isinstance(status, int) else 0
    finally:
        if "cxraug.core.distributed" in sys.modules:  # leave a torchrun process group cleanly
            sys.modules["cxraug.core.distributed"].cleanup()
    if status == 130:  # typer turns Ctrl-C into exit status 130
        end_progress()
        typer.echo(INTERRUPTED, err=True)
    sys.exit(status)


if __name__ == "__main__":
    main()
