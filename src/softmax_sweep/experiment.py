"""One tracked training run: config in, trained model and a complete MLflow run out."""
from __future__ import annotations

import contextlib
import csv
import functools
import logging
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

from mxnet import gluon
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.softmax_sweep_stacked.stack import Request
from hydra_plugins.softmax_sweep_stacked.stack import current as current_stack
from optuna_pruning.urls import mask_password
from softmax_sweep import stacking
from softmax_sweep.config import PROJECT_ROOT, TrainConfig, to_settings
from softmax_sweep.curves import log_curves
from softmax_sweep.data import Dataset, load_dataset, train_count
from softmax_sweep.heap import freeze_before_first_run
from softmax_sweep.interrupts import InterruptCheck
from softmax_sweep.runlog import RunEndHook, RunLogger
from softmax_sweep.stores import resolve_tracking_uri
from softmax_sweep.tracking import Tracker
from softmax_sweep.training import GAP, METRICS, TRAIN_EVAL_METRICS, Callback, FitResult

log = logging.getLogger("softmax_sweep")


class EpochLogger:
    """Progress: one line per epoch with its metrics (at DEBUG level when quiet, as in sweeps)."""

    def __init__(self, num_epochs: int, quiet: bool = False, label: str = "") -> None:
        self.num_epochs = num_epochs
        self.level = logging.DEBUG if quiet else logging.INFO
        self.label = f"{label}: " if label else ""  # which of the runs trained together

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        shown = "  ".join(f"{k} {metrics[k]:.4f}" for k in ("train_loss", "train_acc", "val_acc", "test_acc")
                          if k in metrics)
        log.log(self.level, "%sepoch %d/%d  %s  (%.2fs)", self.label, epoch, self.num_epochs, shown,
                metrics["epoch_seconds"])


def train_softmax(dataset: Dataset, *, lr: float, batch_size: int, num_epochs: int, val_size: int,
                  weight_decay: float = 0.0, seed: int = 0, train_size: Optional[int] = None,
                  patience: Optional[int] = None, monitor: str = "val_acc", lr_schedule: str = "constant",
                  eval_train: bool = False, callbacks: Sequence[Callback] = ()) -> tuple[gluon.Block, FitResult]:
    """Train the softmax regression model on `dataset`; validation picks the best epoch.

    lr_schedule "cosine" decays lr toward 0 over the num_epochs (MXNet's CosineScheduler, per update);
    eval_train measures the model on its training examples after every epoch."""
    settings = stacking.ModelSettings(lr, num_epochs, weight_decay, lr_schedule, patience, callbacks, seed)
    shared = dict(batch_size=batch_size, val_size=val_size, train_size=train_size, monitor=monitor,
                  eval_train=eval_train)
    stack = current_stack()  # a job of a stacked launch: trained with the launch's other jobs
    (model,) = [stack.request(Request(stacking.group_key(dataset, shared), stacking.train_together,
                                      (dataset, settings, shared)))] if stack else \
        stacking.train_stacked(dataset, [settings], **shared)
    if model.error is not None:
        raise model.error
    return model.net, model.result


def summarize(result: FitResult) -> dict[str, float]:
    best = result.best
    summary = {
        "best_epoch": result.best_epoch,
        "test_acc_at_best_epoch": best["test_acc"],
        "epochs_trained": len(result.history),
    }
    if "val_acc" in best:  # without a validation set the last epoch is reported
        summary["best_val_acc"] = best["val_acc"]
        summary["best_val_loss"] = best["val_loss"]
    return summary


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@functools.lru_cache(maxsize=1)
def git_commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


@functools.lru_cache(maxsize=8)
def open_tracker(uri: str, experiment: str, mlruns_dir: str, retry_seconds: float = 15.0) -> Tracker:
    """One Tracker per store and experiment per process (a sweep reuses it for every trial)."""
    return Tracker(uri, experiment, mlruns_dir, retry_seconds)


def tracker_for(settings: TrainConfig) -> Tracker:
    return open_tracker(resolve_tracking_uri(settings.tracking.uri, settings.mlruns_dir),
                        settings.tracking.experiment, settings.mlruns_dir, settings.tracking.retry_seconds)


def _hydra_output_dir() -> Optional[str]:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.output_dir if HydraConfig.initialized() else None


def resolved_config(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    tree = OmegaConf.to_container(OmegaConf.create(cfg) if not isinstance(cfg, DictConfig) else cfg,
                                  resolve=True)
    return _masked(tree)


def _masked(node: Any) -> Any:
    """Every string in a config tree with its URL passwords masked (tracking, storage, a data mirror)."""
    if isinstance(node, dict):
        return {key: _masked(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_masked(value) for value in node]
    return mask_password(node) if isinstance(node, str) else node


# "": the value alone (a remedy's name says what it is)
SHORT_NAMES = {"batch_size": "bs", "num_epochs": "ep", "weight_decay": "wd", "data.train_size": "n",
               "early_stopping_patience": "patience", "remedy": ""}


def run_label(values: Mapping[str, Any]) -> str:
    """`lr=0.5 bs=64`: a run's name from the values it was given, short enough for the runs table."""
    def item(key: str, value: Any) -> str:
        name = SHORT_NAMES.get(key, key.rpartition(".")[2])
        text = f"{value:.3g}" if isinstance(value, float) else "all" if value is None else str(value)
        return f"{name}={text}" if name else text

    return " ".join(item(k, v) for k, v in values.items())


def _write_history(history: Sequence[dict[str, float]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        extra = [k for k in (*TRAIN_EVAL_METRICS, GAP) if history and k in history[0]]
        writer = csv.DictWriter(f, fieldnames=["epoch", *METRICS, *extra, "epoch_seconds"])
        writer.writeheader()
        for epoch, metrics in enumerate(history, start=1):
            writer.writerow({"epoch": epoch, **metrics})


class _History:
    """Keeps the epochs seen so far, so a failed or interrupted run still gets its CSV and plot."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.epochs.append(dict(metrics))


class _Artifacts:
    """The run's files, uploaded in one go at the end (also when the run fails). Where the upload
    fails (a tracking server gone), they are kept in keep_dir (the Hydra run folder, else
    <mlruns_dir>/unsent/<run id>) instead.

    plots: curves.png, shown in the run's description (every run but a seed of a trial, whose
    trial shows the seeds' mean curves)."""

    def __init__(self, run: RunLogger, config_yaml: str, plots: bool, title: str,
                 keep_dir: Optional[str] = None) -> None:
        self.run, self.config_yaml, self.plots, self.title = run, config_yaml, plots, title
        self.keep_dir = keep_dir

    def log(self, history: Sequence[dict[str, float]], best_epoch: int, net: Optional[gluon.Block]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "config.yaml").write_text(self.config_yaml)
            if history:
                _write_history(history, folder / "metrics.csv")
                if self.plots:
                    log_curves(self.run, history, self.title, best_epoch, folder)
            if net is not None:
                net.save_parameters(str(folder / "softmax-best.params"))
            try:
                self.run.log_artifacts(folder)
            except Exception:
                if self.keep_dir is None:
                    raise
                shutil.copytree(folder, self.keep_dir, dirs_exist_ok=True)
                log.warning("the run's files (metrics.csv: %d epochs) could not be uploaded: kept in %s",
                            len(history), self.keep_dir)
                raise


def train(cfg: DictConfig | Mapping[str, Any], callbacks: Sequence[Callback] = (),
          run_name: Optional[str] = None, tags: Optional[Mapping[str, str]] = None,
          on_run_start: Optional[Callable[[RunLogger], None]] = None, on_run_end: Optional[RunEndHook] = None,
          in_sweep: bool = False, params: Optional[Mapping[str, Any]] = None, plots: bool = True) -> dict[str, Any]:
    """Validate cfg, train, and record the whole run in MLflow. Returns the summary metrics plus
    the validation metrics of the best epoch (`val_acc`, `val_loss`), the MLflow `run_id` and the
    per-epoch `history`.

    on_run_start(run) is called once the run exists; on_run_end(run, error) as it ends, error None
    on success (sweeps tie trials to runs);
    in_sweep: epochs are logged at DEBUG level (a sweep prints one line per trial);
    params: more params for the run (a trial's, such as `remedy`, that the config does not hold);
    plots: draw curves.png and show it in the run's description (off for a trial's seeds)."""
    settings = to_settings(cfg)
    tracker = tracker_for(settings)
    data_cfg = settings.data
    dataset = load_dataset(data_cfg.name, data_cfg.root, data_cfg.url)
    # its checks of val_size and train_size fail before the run starts
    train_examples = train_count(dataset.num_train, data_cfg.val_size, data_cfg.train_size)
    freeze_before_first_run()
    resolved = resolved_config(cfg)
    run_tags = {"data.name": dataset.name, "data.digest": dataset.digest, "data.source": dataset.source,
                "data.place": dataset.place, "data.train_examples": str(train_examples), **(tags or {})}
    if commit := git_commit():
        run_tags["mlflow.source.git.commit"] = commit
    output_dir = _hydra_output_dir()
    if output_dir:
        run_tags["hydra.output_dir"] = output_dir
    if run_name is None:
        run_name = run_label({"lr": settings.lr, "batch_size": settings.batch_size, "num_epochs": settings.num_epochs})
    with tracker.run(run_name, run_tags, on_end=on_run_end) as run:
        run.check_artifacts_writable()  # before training, not after it: the plots and config land there
        if on_run_start:
            on_run_start(run)
        flat = flatten(resolved)
        run.log_params({**flat, **{k: v for k, v in (params or {}).items() if k not in flat}})
        run.log_dataset(dataset.name, dataset.digest, dataset.source)
        history = _History()
        artifacts = _Artifacts(run, OmegaConf.to_yaml(resolved), plots=plots,
                               title=f"{dataset.name}: lr={settings.lr:g}, batch_size={settings.batch_size}",
                               keep_dir=output_dir or str(Path(settings.mlruns_dir) / "unsent" / run.run_id))
        try:
            net, result = train_softmax(
                dataset, lr=settings.lr, batch_size=settings.batch_size, num_epochs=settings.num_epochs,
                val_size=data_cfg.val_size, weight_decay=settings.weight_decay, seed=settings.seed,
                train_size=data_cfg.train_size, patience=settings.early_stopping_patience,
                monitor=settings.optimized_metric, lr_schedule=settings.lr_schedule,
                eval_train=settings.eval_train,
                callbacks=[history, EpochLogger(settings.num_epochs, in_sweep, run_name if current_stack() else ""),
                           run, *callbacks, InterruptCheck()],
            )
        except BaseException:
            with contextlib.suppress(Exception):  # keep the curves so far; the original error wins
                artifacts.log(history.epochs, 0, None)
            raise
        artifacts.log(history.epochs, result.best_epoch, net)
        summary = summarize(result)
        run.log_metrics(summary, tags={"stopped_early": result.stopped_early})
        picked = (f"best val_acc {summary['best_val_acc']:.4f} at epoch {result.best_epoch}"
                  if "best_val_acc" in summary else f"no validation set: epoch {result.best_epoch}")
        log.log(logging.DEBUG if in_sweep else logging.INFO, "run %s: %s, test_acc there %.4f (MLflow: %s; "
                "runs table: %s)", run.run_id, picked, summary["test_acc_at_best_epoch"], mask_password(tracker.uri),
                tracker.runs_url())
    validation = {k: result.best[k] for k in ("val_acc", "val_loss") if k in result.best}
    return {**summary, **validation, "run_id": run.run_id, "history": history.epochs}
