"""Passwords in URLs given on the command line never reach Hydra: each is swapped for an
interpolation `${secret:N}` that resolves from this process's environment (which worker and job
processes inherit). Hydra's launch lines, its .hydra/*.yaml files and MLflow's tags then hold the
placeholder; only the code that opens a store resolves the real URL. Everything the program
prints or stores goes through optuna_pruning.urls.mask_password, which knows these passwords."""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from optuna_pruning.urls import mask_password, remember, split_password

ENV_PREFIX = "SOFTMAX_SWEEP_SECRET_"


def _secret(n: str) -> str:
    return os.environ[f"{ENV_PREFIX}{n}"]


def _masked_secret(n: str) -> str:
    return "***"


def hide_passwords(argv: Sequence[str]) -> list[str]:
    """argv with the password of every URL-valued Hydra override replaced by `${secret:N}` inside
    a quoted value (key='scheme://user:${secret:N}@host'), whatever characters the password holds;
    the value of a flag (`--storage URL`) is masked in output but passed as it is."""
    hidden = []
    for arg in argv:
        key, eq, value = arg.partition("=")
        parts = split_password(value.strip("'\"")) if eq and not key.startswith("-") else None
        if parts is not None and not parts[1].startswith("${"):
            before, password, after = parts
            remember(password)
            arg = f"{key}='{before}${{secret:{_store(password)}}}{_escaped(after)}'"
        elif (parts := split_password(arg)) is not None:
            remember(parts[1])
        hidden.append(arg)
    return hidden


def _escaped(text: str) -> str:
    """Text inside a single-quoted Hydra value: quotes and backslashes escaped."""
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _store(password: str) -> str:
    for name, value in os.environ.items():
        if name.startswith(ENV_PREFIX) and value == password:
            return name[len(ENV_PREFIX):]
    n = sum(name.startswith(ENV_PREFIX) for name in os.environ)
    os.environ[f"{ENV_PREFIX}{n}"] = password
    return str(n)


def remember_inherited() -> None:
    """A worker or job process masks the passwords its parent hid, too."""
    for name, value in os.environ.items():
        if name.startswith(ENV_PREFIX):
            remember(value)


def mask_resolved_secrets() -> None:
    """`--cfg job --resolve` prints the config: secrets resolve to *** there."""
    OmegaConf.register_new_resolver("secret", _masked_secret, replace=True)


class _MaskingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_password(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


def mask_logs() -> None:
    """Every handler of the root logger (Hydra's console and train.log ones) masks passwords."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _MaskingFilter) for f in handler.filters):
            handler.addFilter(_MaskingFilter())


def scrub_files(paths: Sequence[Path]) -> None:
    """Mask URL passwords that a config file (not the command line) put into Hydra's saved configs."""
    for path in paths:
        try:
            text = path.read_text()
        except OSError:
            continue
        masked = "\n".join(mask_password(line) for line in text.split("\n"))
        if masked != text:
            path.write_text(masked)


OmegaConf.register_new_resolver("secret", _secret, replace=True)
remember_inherited()
