"""The stacked launcher's public API for apps: Stack, Job, Request, current() and groups_training(). They live in
_stack.py: Hydra's plugin scan executes a plugin's modules whose names do not start with "_"
again on every scan, which would give this module a new thread-local (and new classes) under
code that imported the old ones."""
from hydra_plugins.softmax_sweep_stacked._stack import Job, Request, Stack, current, groups_training

__all__ = ["Job", "Request", "Stack", "current", "groups_training"]
