"""The fused operators (softmax_sweep.fused): the numbers MXNet's own operators give, on
logits small and large, one model and several stacked; and a machine that cannot build it trains
with MXNet's operators, saying so."""
from __future__ import annotations

import logging
import platform
import shutil
import subprocess
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest
from mxnet import nd, sym

from softmax_sweep import fused


@pytest.fixture
def operators() -> None:
    """Skips a test of the fused operators where they cannot be built (no C++ compiler?)."""
    if not fused.available():
        pytest.skip("the fused operators could not be built here (no C++ compiler?): see the warning")


def _run(outputs, feed: dict) -> list[np.ndarray]:
    group = sym.Group(list(outputs))
    graph = mx.nd.CachedOp(group, flags=[("static_alloc", "true")])
    found = graph(*(feed[name] for name in group.list_inputs()))
    return [a.asnumpy() for a in (found if isinstance(found, list) else [found])]


@pytest.mark.parametrize("models", [1, 3])
def test_the_fused_operator_gives_what_mxnets_operators_give(models: int, operators) -> None:
    rng = np.random.RandomState(0)
    rows, classes = 300, 10
    logits = rng.normal(0, 1, (rows, models * classes)).astype(np.float32)
    logits[:100] *= 60  # confident models: logits far apart, probabilities that underflow
    feed = {"logits": nd.array(logits), "y": nd.array(rng.randint(0, classes, rows).astype(np.float32))}
    inputs = [sym.var("logits"), sym.var("y")]
    ours = _run(fused.loss_and_correct(*inputs, models, classes, True), feed)
    theirs = _run(fused.loss_and_correct(*inputs, models, classes, False), feed)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-5)
    np.testing.assert_array_equal(ours[1], theirs[1])
    assert theirs[1].min() > 0 and theirs[0].max() > 100, "some right, some far off: every branch is taken"

    feed["part"] = nd.array(rng.randint(0, 3, (rows, models)).astype(np.float32))  # 0: the row is left out
    ours = _run(fused.loss_and_correct_by_part(*inputs, sym.var("part"), models, classes, 2, True), feed)
    theirs = _run(fused.loss_and_correct_by_part(*inputs, sym.var("part"), models, classes, 2, False), feed)
    assert [a.shape for a in ours] == [a.shape for a in theirs] == [(2, models), (2, models)]
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-5)
    np.testing.assert_array_equal(ours[1], theirs[1])
    part = feed["part"].asnumpy()
    whole = _run(fused.loss_and_correct(*inputs, models, classes, True), feed)
    assert ours[1].sum() == np.sum(whole[1]) - sum(  # each part counts its own rows, none twice
        _run(fused.loss_and_correct(*inputs, 1, classes, True), {"logits": nd.array(logits[part[:, m] == 0][
            :, m * classes:(m + 1) * classes]), "y": nd.array(feed["y"].asnumpy()[part[:, m] == 0])})[1][0]
        for m in range(models))


def test_without_a_compiler_training_uses_mxnets_operators_and_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("SOFTMAX_SWEEP_CACHE", str(tmp_path))  # nothing built there yet
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with caplog.at_level(logging.WARNING, logger="softmax_sweep"):
        assert fused._loaded.__wrapped__() is False
    assert "training uses MXNet's own operators, slower: the fused operators could not be built" in caplog.text
    assert "no-such-compiler" in caplog.text
    assert not list(tmp_path.iterdir()), "no half-built library left behind"


def test_a_broken_build_names_the_compilers_complaint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    compiler = tmp_path / "c++"
    compiler.write_text("#!/bin/sh\necho 'fused_xent.cc:1: error: something the compiler did not like' >&2\nexit 1\n")
    compiler.chmod(0o755)
    monkeypatch.setenv("SOFTMAX_SWEEP_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", str(compiler))
    with caplog.at_level(logging.WARNING, logger="softmax_sweep"):
        assert fused._loaded.__wrapped__() is False
    assert "error: something the compiler did not like" in caplog.text
    assert [p.name for p in tmp_path.iterdir()] == ["c++"], "no half-built library left behind"


def test_the_fused_operator_shares_models_among_threads_without_changing_a_number(operators) -> None:
    """Each model's numbers are the same on one thread and on four (its models split among them),
    and the same as the operator gives that model alone."""
    from softmax_sweep.engine import using

    rng = np.random.RandomState(1)
    rows, classes, models = 2000, 10, 7  # rows x models above the operator's parallel threshold
    logits = rng.normal(0, 4, (rows, models * classes)).astype(np.float32)
    feed = {"logits": nd.array(logits), "y": nd.array(rng.randint(0, classes, rows).astype(np.float32)),
            "part": nd.array(rng.randint(0, 3, (rows, models)).astype(np.float32))}
    inputs = [sym.var("logits"), sym.var("y")]
    ops = [lambda k: fused.loss_and_correct(*inputs, k, classes, True),
           lambda k: fused.loss_and_correct_by_part(*inputs, sym.var("part"), k, classes, 2, True)]
    for op in ops:
        found = {}
        for threads in (1, 4):
            with using(threads):
                found[threads] = _run(op(models), feed)
        for one, four in zip(found[1], found[4]):
            np.testing.assert_array_equal(one, four)
    for m in (0, 3, 6):  # a model alone: its own logits and parts
        alone = {"logits": nd.array(logits[:, m * classes:(m + 1) * classes]), "y": feed["y"],
                 "part": feed["part"][:, m:m + 1]}
        with using(4):
            stacked = _run(ops[0](models), feed)
            own = _run(ops[0](1), alone)
            assert own[0][0] == stacked[0][m] and own[1][0] == stacked[1][m]
            by_part, own_parts = _run(ops[1](models), feed), _run(ops[1](1), alone)
            np.testing.assert_array_equal(own_parts[0][:, 0], by_part[0][:, m])


def test_threads_asking_at_once_load_the_operators_once(monkeypatch, operators) -> None:
    """Groups side by side make their first calls at the same moment: the library is loaded by one
    of them, the others wait for it (loading it twice at once once failed a study, see available())."""
    import threading
    import time

    real, loads = fused._load, []

    def slow_load(library: Path) -> None:
        loads.append(library)
        time.sleep(0.2)  # the window in which a second thread would load it again
        real(library)

    monkeypatch.setattr(fused, "_load", slow_load)
    fused._loaded.cache_clear()
    start, found = threading.Barrier(4), []

    def ask() -> None:
        start.wait()
        found.append(fused.available())

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert found == [True] * 4 and len(loads) == 1


def _exp_mismatches(stride: int) -> int:
    """The library's count of floats 0, stride, 2 * stride, ... whose exp differs from libm's expf;
    skips where the operator calls expf itself."""
    import ctypes

    count = ctypes.CDLL(str(fused.built())).softmax_sweep_exp_mismatches
    count.restype, count.argtypes = ctypes.c_long, [ctypes.c_uint32] * 3
    found = count(0, 0xFFFFFFFF, stride)
    if found == -1:
        pytest.skip("this CPU lacks AVX2 or FMA (or its libm's expf is another): the operator calls expf itself")
    return found


def test_the_loss_operators_exp_is_libms_expf_float_for_float(operators) -> None:
    """Every 1021st float of all 2^32 (4.2 million, each exponent and sign, nan and inf): the
    vector exp gives expf's value bit for bit, so no published number moved with it."""
    assert _exp_mismatches(1021) == 0


@pytest.mark.slow
def test_the_loss_operators_exp_is_libms_expf_on_every_float(operators) -> None:
    assert _exp_mismatches(1) == 0  # all 2^32: 29 s here


def _libm():
    import ctypes
    import ctypes.util

    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    for name in ("expf", "logf"):
        getattr(libm, name).restype, getattr(libm, name).argtypes = ctypes.c_float, [ctypes.c_float]
    return libm


def _row(libm, x: np.ndarray, label: int) -> tuple[float, bool, np.ndarray, np.ndarray]:
    """One row of one model in float32 arithmetic, libm's expf and logf: its loss, whether it is
    right, its exps and their total."""
    top, arg = x[0], 0
    for c in range(1, len(x)):
        if x[c] > top:
            top, arg = x[c], c
    e = [np.float32(libm.expf(float(np.float32(x[c] - top)))) for c in range(len(x))]
    total = np.float32(0)
    for value in e:
        total = np.float32(total + value)
    loss = -float(np.float32(np.float32(x[label] - top) - np.float32(libm.logf(float(total)))))
    return loss, arg == label, e, total


def test_the_loss_operator_gives_the_scalar_sums_of_libms_expf_and_logf(operators) -> None:
    """Each model's loss is what one model's row after row of float arithmetic gives with libm's
    expf and logf (summed in double): float for float, logits small and huge."""
    libm = _libm()
    rng = np.random.RandomState(1)
    rows, models, classes = 40, 3, 10
    logits = rng.normal(0, 1, (rows, models * classes)).astype(np.float32)
    logits[:10] *= 200  # exps below 88 in size and beyond, where expf's own special cases answer
    labels = rng.randint(0, classes, rows)
    feed = {"logits": nd.array(logits), "y": nd.array(labels.astype(np.float32))}
    loss, correct = _run(fused.loss_and_correct(sym.var("logits"), sym.var("y"), models, classes, True), feed)
    for m in range(models):
        found = [_row(libm, logits[n, m * classes:(m + 1) * classes], labels[n]) for n in range(rows)]
        assert loss[m] == np.float32(sum(f[0] for f in found)) and correct[m] == sum(f[1] for f in found)


def test_sgd_epoch_steps_as_float_arithmetic_row_after_row(operators) -> None:
    """sgd_epoch (fused_epoch.cc) against SGD written out in float32, row after row, with libm's
    expf and logf: each row one-hot, so that a logit is one weight plus the bias, exactly, and a
    weight's gradient the sum of its rows' gradients in their order. 7 classes (padded to 10 in
    the operator), 37 inputs (past the last 16, the scalar path), batch 16 (the last step 8 rows),
    three models at other rates, logits small and huge; loss, correct, weights and biases equal
    float for float, on one thread and on two."""
    from softmax_sweep.engine import using

    libm = _libm()
    rng = np.random.RandomState(3)
    rows, inputs, classes, models, batch = 40, 37, 7, 3, 16
    where = rng.randint(0, inputs, rows)
    X = np.zeros((rows, inputs), np.float32)
    X[np.arange(rows), where] = 1
    labels = rng.randint(0, classes, rows)
    W = rng.normal(0, 1, (models * classes, inputs)).astype(np.float32)
    W[:, :5] *= 200  # rows one-hot there: huge logits
    b = rng.normal(0, 0.1, models * classes).astype(np.float32)
    order = rng.permutation(rows)
    steps = -(-rows // batch)
    lrs = np.array([[lr / batch for lr in (0.1, 1.0, 4.0)]] * steps, np.float32)

    want_W, want_b = W.copy(), b.copy()
    want_loss, want_correct = np.zeros(models), np.zeros(models)
    for s in range(steps):
        step_rows = order[s * batch:(s + 1) * batch]
        for m in range(models):
            w, bias = want_W[m * classes:(m + 1) * classes], want_b[m * classes:(m + 1) * classes]
            grads, bias_grad = [], np.zeros(classes)
            for n in step_rows:
                z = np.array([np.float32(w[c, where[n]] + bias[c]) for c in range(classes)], np.float32)
                loss, right, e, total = _row(libm, z, labels[n])
                want_loss[m] += loss
                want_correct[m] += right
                g = [np.float32((np.float32(e[c] / total) - np.float32(c == labels[n])) * lrs[s, m])
                     for c in range(classes)]
                grads.append(g)
                bias_grad += np.array(g, np.float64)
            for c in range(classes):
                for k in range(inputs):
                    total_k = np.float32(0)
                    for g, n in zip(grads, step_rows):
                        if where[n] == k:
                            total_k = np.float32(total_k + g[c])
                    w[c, k] = np.float32(w[c, k] - total_k)
                bias[c] = np.float32(bias[c] - np.float32(bias_grad[c]))

    for threads in (1, 2):
        with using(threads):
            new_W, new_b, loss, correct = (a.asnumpy() for a in fused.sgd_epoch(
                nd.array(X), nd.array(labels.astype(np.float32)), nd.array(order.reshape(1, -1), dtype="int64"),
                nd.array(lrs), nd.zeros(lrs.shape), nd.array(W), nd.array(b), (models,), batch))
        np.testing.assert_array_equal(new_W, want_W)
        np.testing.assert_array_equal(new_b, want_b)
        assert loss.tolist() == np.float32(want_loss).tolist() and correct.tolist() == want_correct.tolist()
    assert np.abs(want_W - W).max() > 0.1 and want_correct.min() > 0, "the models moved, some rows right"


def test_sgd_epoch_refuses_inputs_that_do_not_fit(operators) -> None:
    X, y, W, b = nd.ones((8, 16)), nd.zeros((8,)), nd.ones((20, 16)), nd.zeros((20,))
    order, rates = nd.array([[0, 1, 2, 3]], dtype="int64"), nd.ones((2, 2))
    with pytest.raises(mx.MXNetError, match=r"sgd_epoch: X \(N, D\), labels \(N\)"):  # 3 steps' rates for 2
        fused.sgd_epoch(X, y, order, nd.ones((3, 2)), nd.ones((3, 2)), W, b, (2,), 2).wait_to_read()
    with pytest.raises(mx.MXNetError, match="sgd_epoch: order int64"):
        fused.sgd_epoch(X, y, order.astype("float32"), rates, rates, W, b, (2,), 2).wait_to_read()
    with pytest.raises(mx.MXNetError, match=r"sgd_epoch: label 12 outside 0..9"):
        fused.sgd_epoch(X, y + 12, order, rates, rates, W, b, (2,), 2)[0].wait_to_read()
    with pytest.raises(mx.MXNetError, match=r"sgd_epoch: row 8 outside 0..7"):
        fused.sgd_epoch(X, y, order + 5, rates, rates, W, b, (2,), 2)[0].wait_to_read()


@pytest.mark.skipif(platform.machine() != "x86_64", reason="x86-64 CPU levels: this is not an x86-64 machine")
@pytest.mark.parametrize("level", ["x86-64-v3", "x86-64-v4"])  # AVX2 and FMA; AVX-512
def test_the_operators_build_for_x86_cpus_with_and_without_avx512(level: str, tmp_path: Path) -> None:
    """The library is built with -march=native for the CPU it runs on: its sources must compile for
    a CPU without AVX-512 too (a 64-byte value pinned to a register there stopped the build, and
    training fell back to MXNet's operators with a warning)."""
    compiler = shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        pytest.skip("no C++ compiler on PATH")
    package = Path(mx.__file__).parent
    flags = [f"-march={level}" if flag == "-march=native" else flag for flag in fused.FLAGS if flag != "-shared"]
    for source in fused.SOURCES:
        done = subprocess.run([compiler, *flags, f"-I{package / 'include'}", "-c", str(source), "-o",
                               str(tmp_path / f"{source.stem}.o")], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
