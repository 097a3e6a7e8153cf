"""softmax-sweep: Gluon softmax regression with Hydra configs, MLflow tracking and Optuna sweeps."""

__version__ = "0.1.0"
