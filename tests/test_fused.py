"""The fused operators (softmax_sweep.fused): the numbers MXNet's own operators give, on
logits small and large, one model and several stacked; and a machine that cannot build it trains
with MXNet's operators, saying so."""
from __future__ import annotations

import logging
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
    feed = {"logits": nd.array(logits), "y": nd.array(rng.randint(0, classes, rows).astype(np.float32)),
            "scale": nd.array(rng.uniform(0.001, 0.01, models).astype(np.float32))}
    inputs = [sym.var("logits"), sym.var("y")]
    ours = _run(fused.loss_and_correct(*inputs, models, classes, True), feed)
    theirs = _run(fused.loss_and_correct(*inputs, models, classes, False), feed)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-5)
    np.testing.assert_array_equal(ours[1], theirs[1])
    assert theirs[1].min() > 0 and theirs[0].max() > 100, "some right, some far off: every branch is taken"

    ours = _run(fused.loss_correct_and_grad(*inputs, sym.var("scale"), models, classes, True), feed)
    theirs = _run(fused.loss_correct_and_grad(*inputs, sym.var("scale"), models, classes, False), feed)
    assert [a.shape for a in ours] == [a.shape for a in theirs] == \
        [(models,), (models,), (rows, models * classes), (models * classes,)]
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-5)
    np.testing.assert_array_equal(ours[1], theirs[1])
    np.testing.assert_allclose(ours[2], theirs[2], rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(ours[3], theirs[3], rtol=1e-4, atol=1e-8)

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
            "scale": nd.array(rng.uniform(0.001, 0.01, models).astype(np.float32)),
            "part": nd.array(rng.randint(0, 3, (rows, models)).astype(np.float32))}
    inputs = [sym.var("logits"), sym.var("y")]
    ops = [lambda k: fused.loss_and_correct(*inputs, k, classes, True),
           lambda k: fused.loss_correct_and_grad(*inputs, sym.var("scale"), k, classes, True),
           lambda k: fused.loss_and_correct_by_part(*inputs, sym.var("part"), k, classes, 2, True)]
    for op in ops:
        found = {}
        for threads in (1, 4):
            with using(threads):
                found[threads] = _run(op(models), feed)
        for one, four in zip(found[1], found[4]):
            np.testing.assert_array_equal(one, four)
    for m in (0, 3, 6):  # a model alone: its own logits, scale and parts
        alone = {"logits": nd.array(logits[:, m * classes:(m + 1) * classes]), "y": feed["y"],
                 "scale": feed["scale"][m:m + 1], "part": feed["part"][:, m:m + 1]}
        with using(4):
            stacked = _run(ops[1](models), feed)
            own = _run(ops[1](1), alone)
            np.testing.assert_array_equal(own[2], stacked[2][:, m * classes:(m + 1) * classes])
            assert own[0][0] == stacked[0][m] and own[1][0] == stacked[1][m]
            by_part, own_parts = _run(ops[2](models), feed), _run(ops[2](1), alone)
            np.testing.assert_array_equal(own_parts[0][:, 0], by_part[0][:, m])


@pytest.mark.parametrize("outputs", [10, 37, 160])
def test_minus_transposed_gives_what_mxnets_transpose_and_subtraction_give(outputs: int, operators) -> None:
    """The SGD step's last operation (fused_update.cc), float for float, on one thread and on four
    (160 x 784 is above the operator's parallel threshold; 37 rows end in a partial block)."""
    from softmax_sweep.engine import using

    rng = np.random.RandomState(2)
    feed = {"W": nd.array(rng.normal(0, 0.01, (outputs, 784)).astype(np.float32)),
            "G": nd.array(rng.normal(0, 0.001, (784, outputs)).astype(np.float32))}
    theirs = _run([fused.minus_transposed(sym.var("W"), sym.var("G"), False)], feed)[0]
    assert np.abs(theirs - feed["W"].asnumpy()).max() > 0, "the gradient moves the weights"
    for threads in (1, 4):
        with using(threads):
            np.testing.assert_array_equal(_run([fused.minus_transposed(sym.var("W"), sym.var("G"), True)], feed)[0],
                                          theirs)


def test_minus_transposed_refuses_shapes_that_do_not_transpose(operators) -> None:
    feed = {"W": nd.ones((10, 784)), "G": nd.ones((10, 784))}
    with pytest.raises(mx.MXNetError, match=r"minus_transposed: W \(N, K\), G \(K, N\)"):
        _run([fused.minus_transposed(sym.var("W"), sym.var("G"), True)], feed)


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


def test_the_loss_operator_gives_the_scalar_sums_of_libms_expf_and_logf(operators) -> None:
    """Each model's loss is what one model's row after row of float arithmetic gives with libm's
    expf and logf (summed in double), and its gradient too: float for float, logits small and huge."""
    import ctypes
    import ctypes.util

    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    for name in ("expf", "logf"):
        getattr(libm, name).restype, getattr(libm, name).argtypes = ctypes.c_float, [ctypes.c_float]
    rng = np.random.RandomState(1)
    rows, models, classes = 40, 3, 10
    logits = rng.normal(0, 1, (rows, models * classes)).astype(np.float32)
    logits[:10] *= 200  # exps below 88 in size and beyond, where expf's own special cases answer
    labels = rng.randint(0, classes, rows)
    scale = np.float32(0.01)
    feed = {"logits": nd.array(logits), "y": nd.array(labels.astype(np.float32)),
            "scale": nd.array(np.full(models, scale, np.float32))}
    loss, correct, grad, _ = _run(fused.loss_correct_and_grad(sym.var("logits"), sym.var("y"), sym.var("scale"),
                                                               models, classes, True), feed)
    for m in range(models):
        total_loss, right = 0.0, 0
        for n in range(rows):
            x = logits[n, m * classes:(m + 1) * classes]
            top, arg = x[0], 0
            for c in range(1, classes):
                if x[c] > top:
                    top, arg = x[c], c
            e = [np.float32(libm.expf(float(np.float32(x[c] - top)))) for c in range(classes)]
            total = np.float32(0)
            for value in e:
                total = np.float32(total + value)
            total_loss -= float(np.float32(np.float32(x[labels[n]] - top) - np.float32(libm.logf(float(total)))))
            right += arg == labels[n]
            want = [np.float32((np.float32(e[c] / total) - np.float32(c == labels[n])) * scale) for c in range(classes)]
            assert grad[n, m * classes:(m + 1) * classes].tolist() == want
        assert loss[m] == np.float32(total_loss) and correct[m] == right
