#!/usr/bin/env python
"""Exercise 2 as an Optuna study: long training with large learning rates on small training
subsets, against weight decay and early stopping; shows where test accuracy falls again.

    python sweeps/overfit.py data=digits --n-trials 40
    python sweeps/overfit.py --help
"""
from softmax_sweep.sweeping.script import main

if __name__ == "__main__":
    main("overfit", __doc__)
