#!/usr/bin/env python
"""Exercise 1 as an Optuna study: vary lr, batch_size and num_epochs and see what happens.

    python sweeps/tune.py data=digits --n-trials 30
    python sweeps/tune.py --help
"""
from softmax_sweep.sweeping.script import main

if __name__ == "__main__":
    main("tune", __doc__)
