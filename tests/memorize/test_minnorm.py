"""Min-norm interpolation: equals the pseudo-inverse solution; SGD from zero converges to it."""

from __future__ import annotations

import pytest
import torch

from foolkit.errors import FoolkitError
from foolkit.memorize.minnorm import KernelSpec, fit_minnorm, kernel_matrix, one_hot, sgd_check


@pytest.fixture(scope="module")
def digits(mnist_test):
    idx = torch.randperm(len(mnist_test.y), generator=torch.Generator().manual_seed(0))  # the split is ordered by class
    x, y = mnist_test.images()[idx], mnist_test.y[idx]
    return x[:300], y[:300], x[300:600], y[300:600]


def test_linear_minnorm_equals_pseudo_inverse(digits):
    x, y, _, _ = digits
    x, y = x[:150], y[:150]                                     # n < d: an exact linear fit exists
    model, k = fit_minnorm(x, y, num_classes=10, spec=KernelSpec(kernel="linear"))
    X = x.reshape(150, -1).double()
    w_pinv = torch.linalg.pinv(X) @ one_hot(y, 10)             # the minimum-norm solution of Xw = Y
    w_kernel = X.T @ model.alpha
    assert torch.allclose(w_kernel, w_pinv, atol=1e-8)
    assert float((X @ w_kernel - one_hot(y, 10)).abs().max()) < 1e-8
    # any other interpolant (add a null-space direction) has a larger norm
    null = torch.randn(784, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    null -= X.T @ torch.linalg.lstsq(X @ X.T, X @ null).solution
    assert float((X @ null).abs().max()) < 1e-8
    assert float((w_kernel + null).norm()) > float(w_kernel.norm())


@pytest.mark.parametrize("kernel", ["polynomial", "gaussian"])
def test_nonlinear_kernels_interpolate_and_generalise(digits, kernel):
    x, y, xt, yt = digits
    model, k = fit_minnorm(x, y, num_classes=10, spec=KernelSpec(kernel=kernel))
    assert torch.equal(model.predict(x), y)                     # zero training error
    assert float((k @ model.alpha - one_hot(y, 10)).abs().max()) < 1e-6
    assert float((model.predict(xt) == yt).double().mean()) > 0.8
    assert torch.allclose(model.alpha, torch.linalg.pinv(k, hermitian=True) @ one_hot(y, 10), atol=1e-6)


def test_kernel_matrices_match_definitions(digits):
    x = digits[0][:20].reshape(20, -1).double()
    g = kernel_matrix(x, x, KernelSpec(kernel="gaussian", sigma=3.0))
    brute = torch.stack([torch.exp(-((x - xi) ** 2).sum(1) / 18.0) for xi in x])
    assert torch.allclose(g, brute.T, atol=1e-12)
    p = kernel_matrix(x, x, KernelSpec(kernel="polynomial", degree=3, coef0=1.0))
    u = x / x.norm(dim=1, keepdim=True)
    assert torch.allclose(p, (u @ u.T + 1) ** 3)
    with pytest.raises(FoolkitError):
        KernelSpec(kernel="rbf").validate()


@pytest.mark.parametrize("kernel", ["linear", "polynomial"])
def test_sgd_from_zero_converges_to_minnorm(digits, kernel):
    x, y, _, _ = digits
    res = sgd_check(x[:60], y[:60], num_classes=10, spec=KernelSpec(kernel=kernel), epochs=150)
    assert res["relative_distance"] < 0.05, res
    assert res["prediction_agreement"] == 1.0
    if kernel == "linear":
        assert res["span_residual"] < 1e-10                     # w never left the span of the data


def test_a_kernel_bigger_than_free_memory_is_refused_before_it_is_built(monkeypatch):
    from foolkit.errors import MachineError
    from foolkit.memorize.minnorm import KernelSpec, fit_minnorm

    monkeypatch.setattr("foolkit.memorize.minnorm._available_memory", lambda: 4096)
    with pytest.raises(MachineError, match="kernel matrix of 50 points needs about"):
        fit_minnorm(torch.rand(50, 4), torch.randint(3, (50,)), num_classes=3, spec=KernelSpec(kernel="linear"))


def test_available_memory_reads_linux_memavailable():
    from pathlib import Path

    from foolkit.memorize.minnorm import _available_memory

    if not Path("/proc/meminfo").is_file():
        pytest.skip("not Linux")
    line = next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemAvailable:"))
    assert abs(_available_memory() - int(line.split()[1]) * 1024) < 2**30  # (it moves while we read)
