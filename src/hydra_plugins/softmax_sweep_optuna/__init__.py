"""softmax-sweep's Hydra sweeper on modern Optuna (4+), with per-epoch pruning."""
