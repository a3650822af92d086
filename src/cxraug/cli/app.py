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


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("mlflow", "alembic", "urllib3", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        app()
    except CxraugError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo(
            "interrupted: finished outputs and the last checkpoint are kept; rerun to resume", err=True
        )
        sys.exit(130)
    finally:
        if "cxraug.core.distributed" in sys.modules:  # leave a torchrun process group cleanly
            sys.modules["cxraug.core.distributed"].cleanup()


if __name__ == "__main__":
    main()
