"""The chapter reproduced: its own loop against the project's default run, on real Fashion-MNIST.

    python benchmarks/chapter.py [--seeds 3]

On the same files (the copy load_dataset finds: data.root, MXNet's cache, Debian's
/usr/share/datasets/fashion-mnist, ...), for each seed it trains
  chapter:      the chapter's loop (benchmarks/chapter_loop.py: DataLoader + ToTensor, lr 0.1,
                batch 256, all 60,000 training images);
  default:      the project's default run (conf/train.yaml: 5,000 images held out for validation);
  val_size=0:   the project's run with data.val_size=0, the documented switch that trains on all
                60,000 images as the chapter does;
and prints mean +- sd of test accuracy after epochs 5 and 10, and each run's difference from the
chapter. Target: within 0.3 points at both epochs (default, or the switch reproducing the chapter).
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import published
from chapter_loop import chapter_run
from hydra import compose, initialize_config_dir

from softmax_sweep.config import CONF_DIR, to_settings
from softmax_sweep.data import load_dataset
from softmax_sweep.experiment import train_softmax

EPOCHS = (5, 10)


def project_run(data, settings, seed: int, val_size: int) -> list[float]:
    _, result = train_softmax(data, lr=settings.lr, batch_size=settings.batch_size, num_epochs=max(EPOCHS),
                              val_size=val_size, seed=seed)
    return [m["test_acc"] for m in result.history]


def summary(runs: list[list[float]]) -> dict[int, tuple[float, float]]:
    return {e: (statistics.mean(r[e - 1] for r in runs), statistics.stdev(r[e - 1] for r in runs)) for e in EPOCHS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        settings = to_settings(compose(config_name="train"))
    data = load_dataset(settings.data.name, settings.data.root, settings.data.url)
    print(f"{data.name} from {data.source} ({data.place}), digest {data.digest}; lr {settings.lr}, "
          f"batch {settings.batch_size}, seeds 0-{args.seeds - 1}")
    runs: dict[str, list[list[float]]] = {"chapter": [], "default": [], "val_size=0": []}
    start = time.perf_counter()
    for seed in range(args.seeds):
        runs["chapter"].append(chapter_run(Path(data.source), max(EPOCHS), seed, settings.lr, settings.batch_size)[0])
        runs["default"].append(project_run(data, settings, seed, settings.data.val_size))
        runs["val_size=0"].append(project_run(data, settings, seed, 0))
    chapter = summary(runs["chapter"])
    print(f"{'':12s}" + "".join(f"{'epoch ' + str(e):>22s}{'diff':>8s}" for e in EPOCHS))
    for label, accs in runs.items():
        stats = summary(accs)
        cells = "".join(f"{stats[e][0]:>14.4f} +- {stats[e][1]:.4f}{100 * (stats[e][0] - chapter[e][0]):>+7.2f}p"
                        for e in EPOCHS)
        print(f"{label:12s}{cells}")
    print(f"({time.perf_counter() - start:.0f} s; diff in points of test accuracy against the chapter's loop)")


if __name__ == "__main__":
    published.run(main)
