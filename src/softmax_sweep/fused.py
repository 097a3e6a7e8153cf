"""The project's C++ operators, built once per machine with the C++ compiler into softmax-sweep's
cache (places.own_cache) and loaded as an MXNet extension library:

- sgd_epoch (fused_epoch.cc): a whole training pass of K stacked models, steps and all, in one
  call. A step of this model is too small for MXNet: its dozen operators cost it 5-10x its
  arithmetic at batch 16-32 (benchmarks/stacked.py (f) prints a pass both ways).
- stacked_xent, stacked_xent_parts (fused_xent.cc): softmax cross-entropy on the logits of K stacked
  models, per model the summed loss and the count of correct predictions, in one pass (MXNet's own
  operators take a pass each: log_softmax, pick, argmax, the sums), for evaluations.

Each model's numbers come from the same code whatever else is stacked with it and on any thread
count. Without a compiler, or with SOFTMAX_SWEEP_FUSED=0, graphs of MXNet's operators train and
evaluate instead (softmax_sweep.sgd, softmax_sweep.model); their numbers agree with these to about
1e-6 a step (SGD at lr 1 grows that, as any rounding, into another trajectory of the same spread).
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import mxnet as mx
from mxnet import sym
from mxnet.base import _LIB, OpHandle, c_str, check_call, mx_uint
from mxnet.ndarray.register import _make_ndarray_function
from mxnet.symbol.register import _make_symbol_function

from softmax_sweep.places import own_cache

SOURCES = tuple(Path(__file__).with_name(name) for name in ("fused_xent.cc", "fused_epoch.cc"))
HEADERS = (Path(__file__).with_name("xent_rows.h"),)
# -march=native: fused_epoch.cc's products in this CPU's widest vectors (AVX-512: 2x AVX2's work a cycle)
FLAGS = ("-shared", "-fPIC", "-O2", "-std=c++17", "-fopenmp", "-ffp-contract=off", "-march=native")
log = logging.getLogger("softmax_sweep")


def available() -> bool:
    """Whether graphs built now use the fused operators: unless SOFTMAX_SWEEP_FUSED=0, once they
    are built and loaded into this process (on the first call, in one thread: two groups' first
    epochs side by side loaded the library at once, and MXNet's half-registered operator failed
    one of them, 'Op can only have one argument with variable size', ending exercise 2's study)."""
    if os.environ.get("SOFTMAX_SWEEP_FUSED", "1") == "0":
        return False
    with _loading:
        return _loaded()


_ops: dict[str, Callable] = {}  # the operators' symbol functions, once loaded
_calls: dict[str, Callable] = {}  # and their NDArray functions
_loading = threading.Lock()


@functools.cache
def _loaded() -> bool:
    try:
        _load(built())
    except (OSError, subprocess.CalledProcessError, mx.MXNetError) as e:
        reason = e.stderr.strip().splitlines()[-1] if isinstance(e, subprocess.CalledProcessError) and e.stderr else e
        log.warning("training uses MXNet's own operators, slower: the fused operators could not be built (%s)",
                    reason)
        return False
    return True


def _load(library: Path) -> None:
    """Load the library and make symbol functions of its operators only: mx.library.load
    would make them again for every MXNet operator, 0.4 s of each process's start."""
    check_call(_LIB.MXLoadLib(c_str(str(library)), mx_uint(0)))
    for name in ("stacked_xent", "stacked_xent_parts", "sgd_epoch"):
        handle = OpHandle()
        check_call(_LIB.NNGetOpHandle(c_str(name), ctypes.byref(handle)))
        _ops[name] = _make_symbol_function(handle, name, name)
        _calls[name] = _make_ndarray_function(handle, name, name)


def built() -> Path:
    """The operators' library for these sources, MXNet and machine: built on the first call."""
    package = Path(mx.__file__).parent
    lib_api = package / "src" / "lib_api.cc"
    key = hashlib.sha256(b"\0".join([*(source.read_bytes() for source in (*SOURCES, *HEADERS)), lib_api.read_bytes(),
                                     " ".join(FLAGS).encode(), platform.machine().encode(), _cpu_flags(),
                                     mx.__version__.encode()])).hexdigest()[:16]
    folder = own_cache()
    target = folder / f"fused_xent-{key}.so"
    if target.exists():
        return target
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if not compiler:
        raise OSError("no C++ compiler on PATH (c++, g++, clang++; or set CXX)")
    folder.mkdir(parents=True, exist_ok=True)
    log.info("building the fused operators (once per machine): %s", target)
    fd, partial = tempfile.mkstemp(dir=folder, prefix=".building-", suffix=".so")
    os.close(fd)
    try:  # built beside the target, renamed into place: processes starting together never load half a file
        subprocess.run([compiler, *FLAGS, f"-I{package / 'include'}", *map(str, SOURCES), str(lib_api), "-o",
                        partial], check=True, capture_output=True, text=True)
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


def _cpu_flags() -> bytes:
    """What this CPU can do (-march=native builds for it): a cache shared with another kind of CPU
    gets a library of its own there."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor().encode()
    return next((line for line in info.splitlines() if line.startswith(("flags", "Features"))), "").encode()


def sgd_epoch(X: mx.nd.NDArray, y: mx.nd.NDArray, order: mx.nd.NDArray, lrs: mx.nd.NDArray, decays: mx.nd.NDArray,
              weight: mx.nd.NDArray, bias: mx.nd.NDArray, lanes: tuple[int, ...], batch_size: int
              ) -> list[mx.nd.NDArray]:
    """fused_epoch.cc's SGD pass (once available() says so): the new weight and bias, and per model
    the summed loss and the number of correct predictions."""
    return _calls["sgd_epoch"](X, y, order, lrs, decays, weight, bias, lanes=",".join(map(str, lanes)),
                               batch_size=batch_size)


def _per_model(logits, models: int, num_outputs: int, y):
    """logits as (rows, models, num_outputs) and each row's label for every model."""
    return (sym.reshape(logits, shape=(0, models, num_outputs)),
            sym.broadcast_axis(sym.expand_dims(y, axis=1), axis=1, size=models))


def loss_and_correct(logits, y, models: int, num_outputs: int, fused: bool):
    """Symbols: per model (shape (models,)) the summed loss and the number of correct predictions
    of logits (rows, models * num_outputs) against labels y (rows,)."""
    if fused:
        out = _ops["stacked_xent"](logits, y, models=models)
        return out[0], out[1]
    logits, labels = _per_model(logits, models, num_outputs, y)
    return (-sym.sum(sym.pick(sym.log_softmax(logits, axis=-1), labels, axis=-1), axis=0),
            sym.sum(sym.argmax(logits, axis=-1) == labels, axis=0))


def loss_and_correct_by_part(logits, y, part, models: int, num_outputs: int, parts: int, fused: bool):
    """Symbols: per part 1..parts and model (shape (parts, models)) the summed loss and the number
    of correct predictions over the rows where part (rows, models) holds that part (0: none)."""
    if fused:
        out = _ops["stacked_xent_parts"](logits, y, part, models=models, parts=parts)
        return out[0], out[1]
    logits, labels = _per_model(logits, models, num_outputs, y)
    loss = -sym.pick(sym.log_softmax(logits, axis=-1), labels, axis=-1)
    correct = sym.argmax(logits, axis=-1) == labels
    return tuple(sym.stack(*(sym.sum(value * (part == p), axis=0) for p in range(1, parts + 1)), axis=0)
                 for value in (loss, correct))


def loss_correct_and_grad(logits, y, scale, models: int, num_outputs: int):
    """Symbols of MXNet's operators (the graphs that train where sgd_epoch cannot be built): per
    model the summed loss and the number of correct predictions, the gradient of the loss with
    respect to logits times each model's scale (shape (models,)), and its sum over rows."""
    if models == 1:  # the plain ops: a third fewer per step than the stacked form, which small batches feel
        loss = -sym.sum(sym.pick(sym.log_softmax(logits, axis=-1), y, axis=-1), axis=0, keepdims=True)
        correct = sym.sum(sym.argmax(logits, axis=1) == y, axis=0, keepdims=True)
        grad = sym.broadcast_mul(sym.softmax(logits, axis=-1) - sym.one_hot(y, num_outputs), scale)
    else:
        per_model, labels = _per_model(logits, models, num_outputs, y)
        loss = -sym.sum(sym.pick(sym.log_softmax(per_model, axis=-1), labels, axis=-1), axis=0)
        correct = sym.sum(sym.argmax(per_model, axis=-1) == labels, axis=0)
        grad = sym.broadcast_sub(sym.softmax(per_model, axis=-1), sym.expand_dims(sym.one_hot(y, num_outputs), 1))
        grad = sym.reshape(sym.broadcast_mul(grad, sym.reshape(scale, shape=(1, models, 1))), shape=(0, -1))
    return loss, correct, grad, sym.sum(grad, axis=0)
