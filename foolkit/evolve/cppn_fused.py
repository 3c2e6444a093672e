"""The CPPN render as one fused GPU kernel (Triton), for CUDA devices.

:func:`foolkit.evolve.cppn.render` is built for the CPU: it compacts each genome's live nodes,
reads their sizes back (two host syncs) and runs one sparse product and a few in-place
activation calls per node step, about 160 kernel launches for LeNet-sized CPPNs. On a GPU those
launches and syncs, not the arithmetic, set its speed: 32768 LeNet CPPNs took 16 ms, twice the
LeNet forward of the same images, on an H100.

Here one program renders ``BLOCK`` pixels of one genome. It walks every slot in order (slot
order is a topological order) and keeps, in registers, the pre-activation of every node still
to come: a computed node adds its value times its outgoing weights to all of them at once (a
zero weight is a connection that is off, so dead nodes and absent edges add nothing). It reads
each weight once and writes only the output pixels: no buffer of node values in memory, no host
sync, one launch. The arithmetic is the same as :func:`~foolkit.evolve.cppn.activate`'s,
without the weight folding, so the two renders agree to float32 round-off, which chains of
weights up to 10 amplify: up to about 4e-3 on CPPNs with 16 hidden nodes (half a level of an
8-bit image); the tests hold both to a float64 oracle.

``available(device)`` says whether it can run (a CUDA GPU Triton compiles for, with ``triton``
importable: it ships with torch's CUDA wheels on Linux). With ``TRITON_INTERPRET=1`` set before
Triton is imported, the same kernel runs on CPU tensors in Triton's interpreter: that is how the
CPU-only tests check it.
"""

from __future__ import annotations

import contextlib
import functools
import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - torch's CUDA wheels bring triton; other builds may not
    triton = None

#: kernel codes of the activations, in ``cppn.ACTIVATIONS`` order (the tests check the two agree)
CODES = {"sine": 0, "sigmoid": 1, "gaussian": 2, "linear": 3, "cosine": 4, "abs": 5}
BLOCK = 128  # pixels per program, in two warps: the fastest of 64-512 × 1-8 warps on an H100 for
WARPS = 2  # 32768 LeNet CPPNs (3.4 ms; 3.9 ms at 256 × 4) and 256 colour ones at 224 px (1.3 ms)
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def available(device: torch.device) -> bool:
    """Whether foolkit's Triton kernels (this render, :mod:`foolkit.evolve.variation_fused`) run on
    ``device``: a CUDA GPU that Triton compiles for (compute capability 7.0 or newer), unless
    ``FOOLKIT_TRITON=0`` turns them off (torch's own passes then, slower); or the CPU in Triton's
    interpreter (tests)."""
    if triton is None or os.environ.get("FOOLKIT_TRITON", "1") == "0":
        return False
    if device.type == "cuda":
        return _capability(device.index if device.index is not None else torch.cuda.current_device()) >= (7, 0)
    return INTERPRETED and device.type == "cpu"


@functools.lru_cache(maxsize=None)
def _capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


if triton is not None:

    @triton.jit
    def _activate(z, code):
        """Activation ``code`` (see CODES) of ``z``; every one maps to [-1, 1]."""
        # 2 / (1 + e^-z) - 1 = tanh(z / 2) = 1 - 2 / (e^z + 1): e^z overflows to inf and gives 1
        sig = 1.0 - 2.0 / (tl.exp(z) + 1.0)
        gauss = 2.0 * tl.exp(-tl.minimum(z * z, 80.0)) - 1.0
        out = tl.where(code == 0, tl.sin(z), tl.cos(z))
        out = tl.where(code == 1, sig, out)
        out = tl.where(code == 2, gauss, out)
        out = tl.where(code == 3, tl.minimum(tl.maximum(z, -1.0), 1.0), out)
        out = tl.where(code == 5, tl.minimum(tl.abs(z), 1.0), out)
        return out

    @triton.jit
    def _hls_channel(hue, m1, m2):
        hue = hue - tl.floor(hue)
        rise = m1 + (m2 - m1) * hue * 6.0
        fall = m1 + (m2 - m1) * (2.0 / 3.0 - hue) * 6.0
        return tl.where(hue < 1.0 / 6.0, rise, tl.where(hue < 0.5, m2, tl.where(hue < 2.0 / 3.0, fall, m1)))

    @triton.jit
    def _render_kernel(w_ptr, act_ptr, codes_ptr, coords_ptr, out_ptr, X,
                       N: tl.constexpr, OUTPUTS: tl.constexpr, ROWS: tl.constexpr, BLOCK_X: tl.constexpr):
        # acc[r, x]: pre-activation of node slot 4 + r at pixel x, accumulated as the nodes it
        # listens to are computed ("push": node j adds w[j, k] · value_j to every later node k)
        p = tl.program_id(0).to(tl.int64)
        offs = tl.program_id(1) * BLOCK_X + tl.arange(0, BLOCK_X)
        mask = offs < X
        rows = tl.arange(0, ROWS)
        live = rows < N - 4
        w_row = w_ptr + p * (N * N)  # w[p, src, dst] at src * N + dst
        acc = tl.zeros((ROWS, BLOCK_X), tl.float32)
        for i in tl.static_range(4):  # the inputs x, y, d and the bias 1
            if i == 3:
                value = tl.full((BLOCK_X,), 1.0, tl.float32)
            else:
                value = tl.load(coords_ptr + i * X + offs, mask=mask, other=0.0)
            out_w = tl.load(w_row + i * N + 4 + rows, mask=live, other=0.0)
            acc += out_w[:, None] * value[None, :]
        h = tl.zeros((BLOCK_X,), tl.float32)  # the last outputs: hue, lightness, saturation
        lum = tl.zeros((BLOCK_X,), tl.float32)
        value = tl.zeros((BLOCK_X,), tl.float32)
        for j in tl.static_range(N - 4):  # slot order is a topological order
            z = tl.sum(tl.where(rows[:, None] == j, acc, 0.0), axis=0)
            code = tl.load(codes_ptr + tl.load(act_ptr + p * N + 4 + j))
            value = _activate(z, code)
            if j < N - 4 - OUTPUTS:  # a hidden node feeds later ones (zero weights where off or dead)
                out_w = tl.load(w_row + (4 + j) * N + 4 + rows, mask=live, other=0.0)
                acc += out_w[:, None] * value[None, :]
            if OUTPUTS == 3:
                if j == N - 7:
                    h = (value + 1.0) * 0.5
                if j == N - 6:
                    lum = (value + 1.0) * 0.5
        base = out_ptr + p * (3 if OUTPUTS == 3 else 1) * X + offs
        if OUTPUTS == 1:
            tl.store(base, (value + 1.0) * 0.5, mask=mask)
        else:  # hue, lightness, saturation in [0, 1] → RGB, as cppn.hls_to_rgb
            s = (value + 1.0) * 0.5
            m2 = tl.where(lum <= 0.5, lum * (1.0 + s), lum + s - lum * s)
            m1 = 2.0 * lum - m2
            gray = s == 0.0
            for c in tl.static_range(3):
                v = _hls_channel(h + (1.0 - c) / 3.0, m1, m2)
                v = tl.where(gray, lum, v)
                tl.store(base + c * X, tl.minimum(tl.maximum(v, 0.0), 1.0), mask=mask)


def launching_on(device: torch.device) -> contextlib.AbstractContextManager:
    """The context a kernel for tensors on ``device`` is launched in: Triton launches on the
    current CUDA device, which for ``cuda:1`` tensors must be made ``cuda:1`` first."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


@functools.lru_cache(maxsize=16)
def _codes(activations: tuple[str, ...], device: torch.device) -> torch.Tensor:
    return torch.tensor([CODES[a] for a in activations], dtype=torch.int32, device=device)


def render(w: torch.Tensor, act: torch.Tensor, activations: tuple[str, ...], outputs: int,
           coords: torch.Tensor) -> torch.Tensor:
    """Render ``P`` CPPNs: ``w`` ``(P, N, N)`` float weights (0 where a connection is off), ``act``
    ``(P, N)`` activation indices into ``activations``, ``coords`` ``(4, H*W)`` inputs → ``(P, 1 or
    3, H*W)`` in [0, 1]. Outputs are the last ``outputs`` slots."""
    P, N = act.shape
    X = coords.shape[1]
    out = torch.empty(P, 3 if outputs == 3 else 1, X, device=w.device)
    if P and X:
        grid = (P, triton.cdiv(X, BLOCK))
        with launching_on(w.device):
            _render_kernel[grid](w.contiguous(), act.contiguous(), _codes(activations, w.device), coords.contiguous(),
                                 out, X, N=N, OUTPUTS=outputs, ROWS=triton.next_power_of_2(N - 4), BLOCK_X=BLOCK,
                                 num_warps=WARPS)
    return out
