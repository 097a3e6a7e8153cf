"""Heartbeats of an ask-and-tell sweeper's trials in flight (study.optimize records them itself)."""
from __future__ import annotations

import threading
from typing import Optional


class Heartbeats:
    """Heartbeats of the trials in flight (study.optimize records them itself; an ask-and-tell
    sweeper must), every `interval` seconds on storages that keep them."""

    def __init__(self, storage, interval: Optional[int]) -> None:
        self.storage, self.interval = storage, interval
        self.trial_ids: set[int] = set()
        self.stopped = threading.Event()
        self.thread = None
        if interval and hasattr(storage, "record_heartbeat"):
            self.thread = threading.Thread(target=self._run, name="optuna-heartbeat", daemon=True)
            self.thread.start()

    def add(self, trial_id: int) -> None:
        self.trial_ids.add(trial_id)
        if self.thread is not None:
            self.storage.record_heartbeat(trial_id)

    def remove(self, trial_id: int) -> None:
        self.trial_ids.discard(trial_id)

    def _run(self) -> None:
        while not self.stopped.wait(self.interval):
            for number in list(self.trial_ids):
                self.storage.record_heartbeat(number)

    def stop(self) -> None:
        self.stopped.set()
        if self.thread is not None:
            self.thread.join()
