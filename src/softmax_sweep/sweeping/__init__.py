"""This app's sweeps: tracking and reports of the optuna_pruning sweeper's studies (hydra -m and the
study scripts in sweeps/, which run it), MLflow parents of grid multiruns, exercise 2's answer."""
