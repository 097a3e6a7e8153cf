"""A run's curves.png, and the description that shows it on the run's page in the MLflow UI (its
Model metrics tab draws each metric on a chart of its own; the page a click in the runs table
opens shows the description).

A process that trains a sweep's trials draws them in a background thread while its next trial trains: training runs in
MXNet, mostly outside Python's GIL, and drawing in line cost a 20-trial study of 5-epoch trials 18
points of overhead (`benchmarks/sweep_overhead.py`: 36.5% against 18.7% without curves)."""
from __future__ import annotations

import functools
import logging
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

from softmax_sweep.plots import plot_curves
from softmax_sweep.runlog import RunLogger

NOTE_TAG = "mlflow.note.content"  # a run's description in the MLflow UI (markdown)
log = logging.getLogger("softmax_sweep")
_background: Optional[ThreadPoolExecutor] = None


def note(run_id: str) -> str:
    return ("**Train, validation and test on one chart** (the best epoch in grey; the same as curves.png "
            f"in Artifacts):\n\n![accuracy and loss by epoch](get-artifact?path=curves.png&run_uuid={run_id})\n")


def draw_in_background() -> None:
    """From now on, this process's runs hand their curves to one background thread (a process that
    trains a sweep's trials one after the other); finish_drawing() waits for those still being
    drawn, as the interpreter's exit does."""
    global _background
    if _background is None:
        _background = ThreadPoolExecutor(1, thread_name_prefix="curves")


def finish_drawing() -> None:
    global _background
    pool, _background = _background, None
    if pool is not None:
        pool.shutdown(wait=True)


def log_curves(run: RunLogger, history: Sequence[dict[str, float]], title: str, best_epoch: int = 0,
               folder: Optional[Path] = None) -> None:
    """Draw the run's curves.png and show it in its description: into folder, which the caller
    uploads with the run's other files; else uploaded on its own, in the background after
    draw_in_background()."""
    if not history:
        return
    if folder is not None and _background is None:
        plot_curves(history, folder / "curves.png", best_epoch, title)
        run.set_tags({NOTE_TAG: note(run.run_id)})
        return
    job = functools.partial(_upload, run, [dict(m) for m in history], title, best_epoch)
    if _background is None:
        job()
    else:
        _background.submit(job).add_done_callback(_warn_on_failure)


def _upload(run: RunLogger, history: list[dict[str, float]], title: str, best_epoch: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        plot_curves(history, Path(tmp) / "curves.png", best_epoch, title)
        run.log_artifacts(Path(tmp))
    run.client.set_tag(run.run_id, NOTE_TAG, note(run.run_id))  # the run may have ended: not its queue


def _warn_on_failure(future) -> None:
    if future.exception() is not None:
        log.warning("a run's curves.png could not be stored: %s", future.exception())
