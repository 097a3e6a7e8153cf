"""Hydra's entry to the optuna_pruning sweeper (the sweep itself is in the optuna_pruning package)."""
