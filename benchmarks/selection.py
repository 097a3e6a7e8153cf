"""Which validation metric should pick the epoch (and the trial) in exercise 1? On real Fashion-MNIST.

    python benchmarks/selection.py [--epochs 30]

Trains 18 configurations of sweep=tune's space (batch 16-256, lr 0.01-1, constant lr, seed 0) for
30 epochs, two at a time, and prints for each the test accuracy at its best val_acc epoch and at its
best val_loss epoch. The summary line compares the two over the configurations a study would choose
among (best val_loss <= 0.42): how often each reaches 0.843, and their mean.
"""
from __future__ import annotations

import argparse
import statistics
from concurrent.futures import ProcessPoolExecutor

import published

CONFIGS = [(16, .01), (16, .022), (16, .046), (16, 0.1), (32, .022), (32, .046), (32, .1), (32, 0.15), (64, .046),
           (64, .1), (64, .215), (64, 0.3), (128, .1), (128, .215), (128, .464), (256, .215), (256, .464), (256, 1.0)]


def curves(batch_size: int, lr: float, epochs: int) -> list[dict[str, float]]:
    from softmax_sweep.data import load_dataset
    from softmax_sweep.experiment import train_softmax

    _, result = train_softmax(load_dataset("fashion_mnist"), lr=lr, batch_size=batch_size, num_epochs=epochs,
                              val_size=5000)
    return result.history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    with ProcessPoolExecutor(2) as pool:
        histories = list(pool.map(curves, *zip(*CONFIGS), [args.epochs] * len(CONFIGS)))
    print(f"{'batch':>5s} {'lr':>6s}  {'best val_acc epoch: test':>26s}  {'best val_loss epoch: test':>27s}")
    by_acc, by_loss = [], []
    for (batch_size, lr), history in zip(CONFIGS, histories):
        at_acc = max(history, key=lambda m: m["val_acc"])
        at_loss = min(history, key=lambda m: m["val_loss"])
        print(f"{batch_size:>5d} {lr:>6.3f}  {history.index(at_acc) + 1:>11d}: {at_acc['test_acc']:.4f} "
              f"(val_acc {at_acc['val_acc']:.4f})  {history.index(at_loss) + 1:>8d}: {at_loss['test_acc']:.4f} "
              f"(val_loss {at_loss['val_loss']:.4f})")
        if at_loss["val_loss"] <= 0.42:
            by_acc.append(at_acc["test_acc"])
            by_loss.append(at_loss["test_acc"])
    for name, tests in (("val_acc", by_acc), ("val_loss", by_loss)):
        print(f"picked by {name}: test accuracy {min(tests):.4f}-{max(tests):.4f}, mean {statistics.mean(tests):.4f}, "
              f">= 0.843 in {sum(t >= 0.843 for t in tests)} of {len(tests)} configurations (best val_loss <= 0.42)")


if __name__ == "__main__":
    published.run(main)
