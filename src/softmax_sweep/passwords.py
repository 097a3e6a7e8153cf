"""Passwords in URLs given on the command line never reach Hydra: each is swapped for an
interpolation `${secret:N}` that resolves from this process's environment (which worker and job
processes inherit). Hydra's launch lines, its .hydra/*.yaml files and MLflow's tags then hold the
placeholder; only the code that opens a store resolves the real URL."""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

ENV_PREFIX = "SOFTMAX_SWEEP_SECRET_"
_URL_PASSWORD = re.compile(r"(\w[\w+.-]*://[^/:@\s'\"]*:)([^@/\s'\"]+)@")


def _secret(n: str) -> str:
    return os.environ[f"{ENV_PREFIX}{n}"]


def hide_passwords(argv: Sequence[str]) -> list[str]:
    """argv with the password of every URL in a Hydra override replaced by `${secret:N}` inside
    a quoted value (key='scheme://user:${secret:N}@host'); other arguments (a flag's value) as they are."""
    hidden = []
    for arg in argv:
        key, eq, value = arg.partition("=")
        if eq and not key.startswith("-") and _URL_PASSWORD.search(value):
            value = value.strip("'\"")
            value = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}${{secret:{_store(m.group(2))}}}@", value)
            arg = f"{key}='{value}'"
        hidden.append(arg)
    return hidden


def _store(password: str) -> str:
    for name, value in os.environ.items():
        if name.startswith(ENV_PREFIX) and value == password:
            return name[len(ENV_PREFIX):]
    n = sum(name.startswith(ENV_PREFIX) for name in os.environ)
    os.environ[f"{ENV_PREFIX}{n}"] = password
    return str(n)


def scrub_files(paths: Sequence[Path]) -> None:
    """Mask URL passwords that a config file (not the command line) put into Hydra's saved configs."""
    for path in paths:
        try:
            text = path.read_text()
        except OSError:
            continue
        masked = _URL_PASSWORD.sub(lambda m: m.group(1) + ("***" if not m.group(2).startswith("${") else m.group(2))
                                   + "@", text)
        if masked != text:
            path.write_text(masked)


OmegaConf.register_new_resolver("secret", _secret, replace=True)
