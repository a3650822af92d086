"""MLflow calls that lose a create race when several processes share one tracking server.

MLflow's get-or-create writes are not atomic: two stages (on two machines, or `dvc queue start -j 2`)
logging the same data set to the same experiment at the same moment both find it missing, both insert
it, and the second fails on the database's unique constraint (PostgreSQL: `duplicate key value`, sqlite:
`UNIQUE constraint failed`; from a server it arrives as BAD_REQUEST). Creating an experiment of the same
name races the same way (RESOURCE_ALREADY_EXISTS). Run again, the call finds the row the winner made.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
MARKERS = ("RESOURCE_ALREADY_EXISTS", "duplicate key value", "UNIQUE constraint failed", "UniqueViolation")


def lost_a_race(error: Exception) -> bool:
    """Whether `error` says another writer created the same row first (nothing else is retried)."""
    return getattr(error, "error_code", None) == "RESOURCE_ALREADY_EXISTS" or any(
        marker in str(error) for marker in MARKERS
    )


def retry_lost_races(
    call: Callable[..., T], *args: Any, attempts: int = 4, wait_s: float = 0.25, **kwargs: Any
) -> T:
    """call(*args, **kwargs), run again (after a short wait) while it fails because it lost a create race."""
    for attempt in range(1, attempts + 1):
        try:
            return call(*args, **kwargs)
        except Exception as error:
            if attempt == attempts or not lost_a_race(error):
                raise
            name = getattr(call, "__name__", "call")
            log.info("%s: another process created the same row at the same moment; retry %d", name, attempt)
            time.sleep(wait_s * attempt)
    raise AssertionError("unreachable")
