"""Keeping Python's garbage collector off the objects that live as long as the process."""
from __future__ import annotations

import functools
import gc


def freeze_setup() -> None:
    """Exempt every object that exists now (imported libraries, the data set, the stores: half a
    million objects) from the collector's full passes, which otherwise cost 0.1-0.2 s each, several
    times per sweep. Cheap: nothing is scanned."""
    gc.freeze()


@functools.lru_cache(maxsize=1)
def freeze_before_first_run() -> None:
    """freeze_setup() before the first run of the process only: what later runs leave behind
    (a trial's model, say) must stay collectable."""
    freeze_setup()
