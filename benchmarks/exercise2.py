"""Exercise 2 on real Fashion-MNIST: the whole controlled study (sweep=overfit: training-set
size x lr x remedy, each over its seeds), timed.

    python benchmarks/exercise2.py [--entry script multirun] [--write-docs]

Runs `sweeps/overfit.py` and `python -m softmax_sweep.train -m sweep=overfit` in fresh processes on
new stores and prints, for each, the wall time of the command and the training time of its runs
(the sum of their epochs' seconds, as MLflow recorded them: each run's share of its stack's epochs,
so groups trained side by side both count), then the answer (answer.md). Target: the study
finishes in at most 10 minutes.

--write-docs: docs/results/exercise2.md (the timing and the whole answer), exercise2-answer.md (the
answer's conclusion, which the README quotes) and the study's figures beside them.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import published
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "script": [sys.executable, str(ROOT / "sweeps" / "overfit.py")],
    "multirun": [sys.executable, "-m", "softmax_sweep.train", "-m", "sweep=overfit"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entry", nargs="+", choices=COMMANDS, default=list(COMMANDS))
    parser.add_argument("--write-docs", action="store_true", help="publish the figures under docs/results/")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    timings = []
    for entry in args.entry:
        with tempfile.TemporaryDirectory() as tmp:
            mlruns = Path(tmp)
            start = time.perf_counter()
            done = subprocess.run([*COMMANDS[entry], f"mlruns_dir={mlruns}", *args.overrides],
                                  capture_output=True, text=True)
            wall = time.perf_counter() - start
            if done.returncode:
                raise SystemExit(f"{entry} failed:\n{done.stderr[-3000:]}")
            client = MlflowClient(f"sqlite:///{mlruns / 'mlflow.db'}")
            experiment = client.get_experiment_by_name("softmax-sweep")
            runs = [r for r in client.search_runs([experiment.experiment_id], max_results=5000)
                    if "seed" in r.data.tags]
            training = sum(m.value for r in runs for m in client.get_metric_history(r.info.run_id, "epoch_seconds"))
            (answer,) = list(mlruns.glob("artifacts/*/artifacts/answer.md"))
            text = answer.read_text()
            timings.append(f"`{' '.join(COMMANDS[entry][1:]).replace(str(ROOT) + '/', '')}`: {len(runs)} runs, wall "
                           f"{wall:.0f} s ({wall / 60:.1f} min; target <= 10 min), its runs' epochs {training:.0f} s "
                           f"({training / wall:.2f}x the wall: groups that train side by side both count)")
            print(timings[-1], flush=True)
            if args.write_docs:
                figures = {f"exercise2-{n}.png": answer.parent / f"{stem}.png" for n, stem in
                           (("curves", "exercise2_curves"), ("remedies", "exercise2_remedies"),
                            ("overfitting-map", "overfitting_map"))}
                conclusion = text.split("## The evidence")[0].split("\n", 1)[1].strip()
                published.publish("exercise2-answer", conclusion)
                published.publish("exercise2", "\n\n".join(["Measured on this machine, real Fashion-MNIST:",
                                                             *(f"- {t}" for t in timings), text]), figures)
    print()
    print(text)


if __name__ == "__main__":
    main()
