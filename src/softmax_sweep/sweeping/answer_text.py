"""Exercise 2's answer.md: the conclusion a student can repeat, then the tables it rests on."""
from __future__ import annotations

import math
from collections.abc import Sequence

from softmax_sweep.sweeping.answer import Interval, Setting, loss_window, significant


def _points(value: Interval, sign: bool = True) -> str:
    mean, half = value
    text = f"{100 * mean:+.2f}" if sign else f"{100 * abs(mean):.2f}"
    return text + ("" if math.isnan(half) else f" +- {100 * half:.2f}")


def roles(found: Sequence[Setting]) -> tuple[list[Setting], Setting | None, Setting | None]:
    """(the study's small-data settings at batch 32, the reference with every training image,
    the larger-batch row)."""
    reference = max(found, key=lambda s: s.train_size) if len({s.train_size for s in found}) > 1 else None
    batch = next((s for s in found if s is not reference and s.batch_size != 32), None)
    study = [s for s in found if s is not reference and s is not batch]
    return study, reference, batch


def conclusion(found: Sequence[Setting]) -> list[str]:
    """The answer in a few sentences a student can repeat, each resting on the tables below it."""
    study, reference, batch = roles(found)
    if not study:
        return []
    lines = []
    widest = max(study, key=lambda s: s.gap_growth[0])
    lines.append(
        f"**Test accuracy falls again because the model overfits its few training images.** With {widest.name}, "
        f"training accuracy reaches {widest.train_acc_last:.3f} by epoch {widest.epochs} while test accuracy ends at "
        f"{widest.last:.3f}: the gap between them grows by {_points(widest.gap_growth, False)} points after the "
        "best epoch.")
    lines.append(_loss_sentence(study))
    falling = [s for s in study if s.falls]
    single = max(study, key=lambda s: s.single_fall[0])
    lines.append(
        f"The seeds' mean test accuracy falls beyond the noise in {len(falling)} of {len(study)} settings"
        + (f" (at most {100 * max(s.fall[0] for s in falling):.2f} points)" if falling else "")
        + f"; a single run looks worse (with {single.name} it ends {_points(single.single_fall, False)} points "
        "below its own best epoch) because its accuracy swings from epoch to epoch and its best epoch is a lucky "
        "one. Judge a fall over several seeds.")
    lines.append(_remedy_sentence(study))
    if reference is not None:
        lines.append(
            f"**More data is the first remedy:** with every training image ({reference.train_size}, the chapter's "
            f"lr {reference.lr:g} and batch {reference.batch_size}) the gap ends at "
            f"{_points(reference.gap_last, False)} points and the test loss "
            f"{'rises' if reference.loss_rises else 'does not rise'} ({_signed(reference.loss_rise)}).")
    if batch is not None:
        same = next((s for s in study if s.train_size == batch.train_size
                     and math.isclose(s.lr / 32, batch.lr / batch.batch_size)), None)
        if same is not None:
            lines.append(
                f"**Batch size:** the noise of an SGD step grows with lr / batch_size. At batch {batch.batch_size} "
                f"and lr {batch.lr:g} (the same ratio as lr {same.lr:g} at batch 32, {batch.batch_size // 32}x fewer "
                f"steps per epoch) test accuracy ends at {batch.last:.3f} against {same.last:.3f}, swinging "
                f"{100 * batch.swing:.2f} points from epoch to epoch against {100 * same.swing:.2f}, and the gap "
                f"ends at {_points(batch.gap_last, False)} against {_points(same.gap_last, False)} points.")
    return lines


def _loss_sentence(study: Sequence[Setting]) -> str:
    """Where the test loss runs away from the training loss while accuracy hardly moves, and
    whether it turns up again within the run."""
    top = max(study, key=lambda s: s.loss_last - s.train_loss_last)
    calm = min((s for s in study if s.train_size == top.train_size and s is not top),
               key=lambda s: s.loss_last, default=None)
    text = (f"**Watch the test loss, not only the accuracy.** With {top.name} the test loss ends at "
            f"{top.loss_last:.2f} against {top.train_loss_last:.2f} on the training images")
    if calm is not None and calm.loss_last < top.loss_last:
        text += (f", and at {top.loss_last / calm.loss_last:.1f}x its value at lr {calm.lr:g} ({calm.loss_last:.2f}) "
                 f"while their test accuracies differ by {100 * abs(top.last - calm.last):.1f} points")
    text += (": the model has grown confident, also on the test images it gets wrong, which accuracy does not "
             "show. That is overfitting before it costs accuracy.")
    rising = [s for s in study if s.loss_rises]
    if rising:
        most = max(rising, key=lambda s: s.loss_rise[0])
        return text + (f" The test loss turns up again after its lowest epoch beyond the noise in {len(rising)} of "
                       f"{len(study)} settings (most with {most.name}: from {most.loss_low:.2f} at epoch "
                       f"{most.loss_low_epoch} to {most.loss_last:.2f}, {_signed(most.loss_rise)}).")
    return text + f" Within {study[0].epochs} epochs it turns up again beyond the noise in none of the settings."


def _signed(value: Interval) -> str:
    return f"{value[0]:+.2f}" + ("" if math.isnan(value[1]) else f" +- {value[1]:.2f}")


def _remedy_sentence(study: Sequence[Setting]) -> str:
    """Each remedy at each strength: in how many settings it helps or hurts beyond the noise."""
    labels = [label for s in study for label in s.recovered]
    labels = list(dict.fromkeys(labels))
    if not labels:
        return "No remedy was tried."
    parts = []
    for label in labels:
        values = [s.recovered[label] for s in study if label in s.recovered]
        helps = sum(significant(v) > 0 for v in values)
        hurts = sum(significant(v) < 0 for v in values)
        means = [100 * v[0] for v in values]
        verdict = (f"helps in {helps}" if helps else "helps in none") + (f", hurts in {hurts}" if hurts else "")
        parts.append(f"{label} {verdict} of {len(values)} ({min(means):+.2f} to {max(means):+.2f} points)")
    best = max(labels, key=lambda lb: sum(s.recovered[lb][0] for s in study if lb in s.recovered))
    return (f"**What fixes it, measured on the final model:** {'; '.join(parts)}. On average the best here is "
            f"{best}. A remedy's strength matters: too much weight decay underfits, too little does nothing.")


def answer_markdown(found: Sequence[Setting], data_label: str, num_epochs: int | None = None) -> str:
    """The answer first, then the evidence: one table per setting, one of remedies."""
    if not found:
        return "# Exercise 2\n\nNo complete configuration without a remedy: nothing to answer yet.\n"
    seeds, epochs = found[0].seeds, num_epochs or found[0].epochs
    lines = [f"# Exercise 2 on {data_label}: why test accuracy falls again, and what fixes it", "",
             *(f"{sentence}\n" for sentence in conclusion(found)),
             "## The evidence", "",
             f"{epochs} epochs, {seeds} seeds per configuration; +- is the 95% confidence interval over seeds. "
             "Accuracy differences are in points (1 point = 0.01). Gap: training accuracy (the model on its "
             "training images at the epoch's end) minus test accuracy; best epoch: the epoch with the best "
             "validation accuracy. Peak and lowest loss are read off the seeds' mean curves, the test loss averaged "
             f"over {loss_window(epochs)} epochs (each epoch and those before it); 'one run' is each seed from its own "
             "best epoch to its last, the fall a single run shows.", "",
             "| training images | lr | batch | test acc peaks at epoch | peak | last | fall, peak to last | one run: "
             "own peak to last | test loss lowest at epoch | lowest | last | rise | gap at best epoch | "
             "gap at last epoch |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in found:
        lines.append(f"| {s.train_size} | {s.lr:g} | {s.batch_size} | {s.peak_epoch} | {s.peak:.4f} | {s.last:.4f} | "
                     f"{_points(s.fall)} | {_points(s.single_fall)} | {s.loss_low_epoch} | {s.loss_low:.3f} | "
                     f"{s.loss_last:.3f} | {_signed(s.loss_rise)} | {_points(s.gap_best)} | {_points(s.gap_last)} |")
    labels = list(dict.fromkeys(label for s in found for label in s.recovered))
    if labels:
        lines += ["", "Points of final test accuracy each remedy recovers against no remedy, same seeds (the final "
                      "model: the last epoch's, or the restored best epoch's with early stopping); **bold**: beyond "
                      "the noise over seeds:", "",
                  "| training images | lr | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
        for s in found:
            if s.recovered:
                cells = [_cell(s.recovered[lb]) if lb in s.recovered else "" for lb in labels]
                lines.append(f"| {s.train_size} | {s.lr:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: Interval) -> str:
    return f"**{_points(value)}**" if significant(value) else _points(value)
