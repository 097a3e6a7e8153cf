"""Optuna sweeps shared by the Hydra sweeper plugin and the study scripts in sweeps/."""
