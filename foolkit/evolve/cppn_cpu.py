"""The CPPN's CPU kernels (numba): the render and the mutation, one genome at a time.

:func:`foolkit.evolve.cppn.render` without these walks the whole population node step by node
step in torch: about 40 setup passes and eight calls a step, each over a buffer of every node's
pixels (10 MB for 200 LeNet CPPNs). The work is a few multiply-adds and one activation per node
and pixel, so torch's per-call cost and the trips through memory, not the arithmetic, set its
speed: 200 LeNet CPPNs took 2.7 ms, a fifth of the LeNet forward of their images on two cores.
:func:`render` here compiles (numba) one loop per genome: its live nodes in slot order (a
topological order), each a weighted sum of its sources' rows and an activation over a tile of
pixels held in cache. Its sine and exponential are polynomials after a range reduction, as
vector libraries compute them (within 2e-7 of float64), written out so the pixel loops
vectorise; colour outputs are mapped from HLS to RGB in the same loop. The Triton kernel
(:mod:`foolkit.evolve.cppn_fused`) is the GPU's version of the same idea. Each genome is
computed alone, so the images do not depend on how genomes are split among threads (see
:data:`GRAIN` for when they are).

:func:`mutate_structure` and :func:`resample_activations` are the rest of
:func:`foolkit.evolve.cppn.mutate` (whose weights go through :mod:`foolkit.evolve.variation_cpu`),
as compiled loops over the genomes in place of about 150 small whole-population torch passes
(which a CPU runs at about 4 µs each, twice that right after a model's forward: 1.1 ms a
generation of 200 LeNet CPPNs, against 0.3 ms here). The structural mutations take the same
uniforms as the torch version and give the same genomes bit for bit (the tests run both); the
activations draw from a counter-based generator (splitmix64) keyed by a number drawn from the
run's ``torch.Generator``, so a run is still determined by its seed.

``available()`` says whether they run: numba importable, unless ``FOOLKIT_NUMBA=0``. Compiled
code is cached on disk (numba's cache), so only the first run on a machine pays the ~4 s compile.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from foolkit.evolve.cppn_fused import CODES  # the activations' kernel codes, shared with the GPU kernel

try:
    import numba
except ImportError:  # pragma: no cover - a dependency; torch's passes run without it
    numba = None

TILE = 2048  # most pixels per tile: (nodes + 1) rows of them stay in a core's cache (170 KB at 21 nodes)
#: pixels each thread must have for the render to use more than one: a helper thread woken right
#: after torch's OpenMP threads worked (they spin-wait about a millisecond for more) shares the
#: calling thread's core, which made a 1.5 ms LeNet render 1.6 ms in the generation loop
GRAIN = 262144


def available() -> bool:
    """Whether the numba kernels run (numba importable, ``FOOLKIT_NUMBA`` not ``0``)."""
    return numba is not None and os.environ.get("FOOLKIT_NUMBA", "1") != "0"


def _split(value: float, bits: int) -> tuple[float, float]:
    """``value`` = ``high`` + ``rest`` with ``bits`` significant bits in ``high``: ``k * high`` is then
    exact in float32 for integers ``|k| < 2^(24 - bits)``, the Cody-Waite range reduction."""
    mantissa, exponent = math.frexp(value)
    high = math.floor(mantissa * 2.0**bits) * 2.0 ** (exponent - bits)
    return high, value - high


f32 = np.float32
_PI_A, _rest = _split(math.pi, 12)
_PI_B, _PI_C = _split(_rest, 12)
PI_A, PI_B, PI_C, INV_PI = f32(_PI_A), f32(_PI_B), f32(_PI_C), f32(1.0 / math.pi)
_LN2_A, _LN2_B = _split(math.log(2.0), 12)
LN2_A, LN2_B, LOG2E = f32(_LN2_A), f32(_LN2_B), f32(1.0 / math.log(2.0))
ZERO, HALF, ONE, TWO = f32(0.0), f32(0.5), f32(1.0), f32(2.0)
LEVELS = f32(255.0)  # an 8-bit image's top level
SIXTH, THIRD, TWO_THIRDS, SIX = f32(1 / 6), f32(1 / 3), f32(2 / 3), f32(6.0)
# Taylor coefficients: sin on [-π/2, π/2] to r^11 (error below 6e-8), e^r on [-ln2/2, ln2/2] to r^7 (5e-9)
S3, S5, S7, S9, S11 = (f32(c) for c in (-1 / 6, 1 / 120, -1 / 5040, 1 / 362880, -1 / 39916800))
E2, E3, E4, E5, E6, E7 = (f32(1 / math.factorial(n)) for n in range(2, 8))
EXP_MIN = f32(-80.0)  # e^-80 ~ 2e-35 stays a normal float (2^k is built from its exponent bits)


def _jit(**options):  # compile on first call, cached on disk when numba has somewhere to write
    def wrap(fn):
        try:
            return numba.njit(cache=True, **options)(fn)
        except RuntimeError:  # pragma: no cover - no writable cache location
            return numba.njit(**options)(fn)
    return wrap


if numba is not None:

    @numba.njit(inline="always", fastmath={"contract"})
    def _sin_reduced(r, k):
        """sin(r) (-1)^k for |r| <= π/2 and integral k (as a float)."""
        r2 = r * r
        s = r + r * r2 * (S3 + r2 * (S5 + r2 * (S7 + r2 * (S9 + r2 * S11))))
        odd = k - TWO * np.floor(k * HALF)  # 0 or 1
        return s - TWO * odd * s

    @numba.njit(inline="always", fastmath={"contract"})
    def _sin(z):
        k = np.floor(z * INV_PI + HALF)  # z = kπ + r
        return _sin_reduced(((z - k * PI_A) - k * PI_B) - k * PI_C, k)

    @numba.njit(inline="always", fastmath={"contract"})
    def _cos(z):
        k = np.floor(z * INV_PI)  # z = (k + 1/2)π + r: cos z = -(-1)^k sin r
        h = k + HALF
        return -_sin_reduced(((z - h * PI_A) - h * PI_B) - h * PI_C, k)

    @numba.njit(inline="always", fastmath={"contract"})
    def _exp_parts(e):
        """e^e for e in [-80, 0] as (a polynomial, the float32 bits of a power of two)."""
        k = np.floor(e * LOG2E + HALF)
        r = (e - k * LN2_A) - k * LN2_B
        poly = ONE + r * (ONE + r * (E2 + r * (E3 + r * (E4 + r * (E5 + r * (E6 + r * E7))))))
        return poly, (np.int32(k) + np.int32(127)) << np.int32(23)

    @numba.njit(inline="always", fastmath={"contract"})
    def _hls_channel(hue, m1, m2):
        hue = hue - np.floor(hue)
        if hue < SIXTH:
            v = m1 + (m2 - m1) * hue * SIX
        elif hue < HALF:
            v = m2
        elif hue < TWO_THIRDS:
            v = m1 + (m2 - m1) * (TWO_THIRDS - hue) * SIX
        else:
            v = m1
        return min(max(v, ZERO), ONE)

    @_jit(nogil=True, boundscheck=False, error_model="numpy", fastmath={"contract"})
    def _render_range(w, act, alive, codes, coords, out, quantize, start, stop):  # pragma: no cover - compiled
        P, N, _ = w.shape
        O, X = out.shape[1], coords.shape[1]
        T = min(X, TILE)
        vals = np.empty((N, T), np.float32)  # node values on the tile's pixels
        z = np.empty(T, np.float32)
        poly = np.empty(T, np.float32)
        bits = np.empty(T, np.int32)
        scale = bits.view(np.float32)
        srcs = np.empty(N * N, np.int64)  # each node's sources and weights, node after node
        wts = np.empty(N * N, np.float32)
        first = np.empty(N + 1, np.int64)
        useful = np.empty(N, np.bool_)
        for p in range(start, stop):
            for k in range(N - 1, 3, -1):  # which nodes reach an output (a hidden node may be a dead end)
                useful[k] = k >= N - O
                if alive[p, k]:
                    for j in range(k + 1, N):
                        useful[k] |= useful[j] & (w[p, k, j] != 0)
            n = 0
            for k in range(N):
                first[k] = n
                if k >= 4 and useful[k]:
                    for i in range(k):
                        srcs[n] = i
                        wts[n] = w[p, i, k]
                        n += (w[p, i, k] != 0) & alive[p, i]  # branch-free: a zero weight is no connection
            first[N] = n
            for x0 in range(0, X, T):
                t = min(T, X - x0)
                for i in range(4):
                    row = vals[i]
                    for x in range(t):
                        row[x] = coords[i, x0 + x]
                for k in range(4, N):
                    if not useful[k]:
                        continue
                    a, b = first[k], first[k + 1]
                    if a == b:
                        for x in range(t):
                            z[x] = ZERO
                    for e in range(a, b):
                        we, src = wts[e], vals[srcs[e]]
                        if e == a:
                            for x in range(t):
                                z[x] = we * src[x]
                        else:
                            for x in range(t):
                                z[x] += we * src[x]
                    row = vals[k]
                    code = codes[act[p, k]]
                    if code == 0:
                        for x in range(t):
                            row[x] = _sin(z[x])
                    elif code == 4:
                        for x in range(t):
                            row[x] = _cos(z[x])
                    elif code == 1 or code == 2:  # tanh(z / 2) = ±(1 - e^-|z|) / (1 + e^-|z|); 2 e^(-z²) - 1
                        for x in range(t):
                            e = -abs(z[x]) if code == 1 else -(z[x] * z[x])
                            poly[x], bits[x] = _exp_parts(max(e, EXP_MIN))
                        if code == 1:
                            for x in range(t):
                                ex = poly[x] * scale[x]
                                th = (ONE - ex) / (ONE + ex)
                                row[x] = th if z[x] >= ZERO else -th
                        else:
                            for x in range(t):
                                row[x] = TWO * (poly[x] * scale[x]) - ONE
                    elif code == 3:
                        for x in range(t):
                            row[x] = min(max(z[x], -ONE), ONE)
                    else:
                        for x in range(t):
                            row[x] = min(abs(z[x]), ONE)
                if O == 1:
                    row = vals[N - 1]
                    for x in range(t):
                        out[p, 0, x0 + x] = min(max((row[x] + ONE) * HALF, ZERO), ONE)
                else:  # hue, lightness, saturation → RGB, as cppn.hls_to_rgb
                    for x in range(t):
                        h = min(max((vals[N - 3, x] + ONE) * HALF, ZERO), ONE)
                        lum = min(max((vals[N - 2, x] + ONE) * HALF, ZERO), ONE)
                        sat = min(max((vals[N - 1, x] + ONE) * HALF, ZERO), ONE)
                        m2 = lum * (ONE + sat) if lum <= HALF else lum + sat - lum * sat
                        m1 = TWO * lum - m2
                        gray = sat == ZERO
                        out[p, 0, x0 + x] = lum if gray else _hls_channel(h + THIRD, m1, m2)
                        out[p, 1, x0 + x] = lum if gray else _hls_channel(h, m1, m2)
                        out[p, 2, x0 + x] = lum if gray else _hls_channel(h - THIRD, m1, m2)
                if quantize:  # as foolkit.images.quantize: the nearest of the 256 levels k / 255 (ties to even)
                    for c in range(out.shape[1]):
                        for x in range(x0, x0 + t):
                            out[p, c, x] = np.rint(out[p, c, x] * LEVELS) / LEVELS

    @numba.njit(inline="always")
    def _mix(key, counter):
        """64 random bits from a 64-bit key and a counter (splitmix64 of the two): a counter-based
        generator, so a gene's numbers depend on neither the order nor the thread."""
        z = key + counter * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))

    @numba.njit(inline="always")
    def _uniform(key, counter):
        """A uniform float32 in [0, 1) (a multiple of 2^-24) from :func:`_mix`."""
        return np.float32(_mix(key, counter) >> np.uint64(40)) * np.float32(2.0**-24)

    @_jit(nogil=True, boundscheck=False)
    def _resample(act, alive, inputs, key, rate, A):  # pragma: no cover - compiled
        P, N = act.shape
        for p in range(P):
            for k in range(N):
                c = np.uint64(2 * (p * N + k))
                if alive[p, k] and not inputs[k] and _uniform(key, c) < rate:
                    act[p, k] = min(np.int64(_uniform(key, c + np.uint64(1)) * np.float32(A)), A - 1)

    @numba.njit(inline="always")
    def _choose(found, n, u):
        """One of the ``n`` candidates ``found[:n]`` (ascending): the r-th, r = ⌊u · n⌋ + 1 capped
        at n, as cppn._pick chooses (in float32, as there); (0, False) when there are none."""
        if n == 0:
            return 0, False
        return found[min(np.int32(u * np.float32(n)), np.int32(n - 1))], True

    @numba.njit(inline="always")
    def _insert(edges, n, edge):
        """Insert ``edge`` into the ascending ``edges[:n]``; returns the new length."""
        i = n
        while i > 0 and edges[i - 1] > edge:
            edges[i] = edges[i - 1]
            i -= 1
        edges[i] = edge
        return n + 1

    @numba.njit(inline="always")
    def _remove(edges, n, edge):
        """Remove ``edge`` from the ascending ``edges[:n]`` (it is there); returns the new length."""
        i = 0
        while edges[i] != edge:
            i += 1
        for j in range(i, n - 1):
            edges[j] = edges[j + 1]
        return n - 1

    @_jit(nogil=True, boundscheck=False)
    def _structure(w, on, act, alive, u, allowed, hidden, rates, wmax, A):  # pragma: no cover - compiled
        P, N, _ = w.shape
        free = np.empty(N * N, np.int64)  # permitted, disabled edges between live nodes, as src·N + dst, ascending
        edges = np.empty(N * N, np.int64)  # the enabled edges, ascending: kept up to date through the edits
        found = np.empty(N * N, np.int64)  # other candidates
        vacant_before = np.empty(N + 1, np.int64)  # vacant hidden slots below each slot
        for p in range(P):
            wp, onp, alivep = w[p], on[p], alive[p]  # nodes stay as they are until add node
            nf = ne = 0
            for i in range(N):  # one scan; enabled edges only run from a lower slot to a higher one
                for j in range(i + 1, N):
                    free[nf] = edges[ne] = i * N + j  # branch-free: written always, kept if it is one
                    nf += allowed[i, j] & alivep[i] & alivep[j] & (not onp[i, j])
                    ne += onp[i, j]
            # add connection
            edge, ok = _choose(free, nf, u[0, p])
            if ok and u[1, p] < rates[0]:
                onp[edge // N, edge % N] = True
                wp[edge // N, edge % N] = (u[2, p] * TWO - ONE) * wmax
                ne = _insert(edges, ne, edge)
            # delete connection
            edge, ok = _choose(edges, ne, u[3, p])
            if ok and u[4, p] < rates[1]:
                onp[edge // N, edge % N] = False
                wp[edge // N, edge % N] = ZERO
                ne = _remove(edges, ne, edge)
            # change connection: move one end of an enabled connection to a free slot, keeping its weight
            edge, ok = _choose(edges, ne, u[5, p])
            src, dst = edge // N, edge % N
            keep_src = u[6, p] < HALF
            m = 0
            for i in range(N):
                a, b = (src, i) if keep_src else (i, dst)
                found[m] = i
                m += allowed[a, b] & alivep[a] & alivep[b] & (not onp[a, b])
            other, ok2 = _choose(found, m, u[7, p])
            if ok and ok2 and u[8, p] < rates[2]:
                ms, md = (src, other) if keep_src else (other, dst)
                wp[ms, md] = wp[src, dst]
                wp[src, dst] = ZERO
                onp[src, dst] = False
                onp[ms, md] = True
                ne = _insert(edges, _remove(edges, ne, edge), ms * N + md)
            # add node: split an enabled connection a → b through a vacant hidden slot a < k < b
            vacant_before[0] = 0
            for k in range(N):
                vacant_before[k + 1] = vacant_before[k] + (hidden[k] & (not alivep[k]))
            m = 0
            for e in range(ne):
                a, b = edges[e] // N, edges[e] % N
                found[m] = edges[e]
                m += vacant_before[b] > vacant_before[a + 1]  # a vacant slot in (a, b)
            edge, ok = _choose(found, m, u[9, p])
            a, b = edge // N, edge % N
            m = 0
            for k in range(a + 1, b):
                found[m] = k
                m += hidden[k] & (not alivep[k])
            k, ok2 = _choose(found, m, u[10, p])
            if ok and ok2 and u[11, p] < rates[3]:
                wp[k, b] = wp[a, b]
                wp[a, b] = ZERO
                wp[a, k] = min(ONE, wmax)
                onp[a, b] = False
                onp[a, k] = True
                onp[k, b] = True
                alivep[k] = True
                act[p, k] = min(np.int64(u[12, p] * np.float32(A)), A - 1)
            # delete node, with its connections
            m = 0
            for k in range(N):
                found[m] = k
                m += alivep[k] & hidden[k]
            k, ok = _choose(found, m, u[13, p])
            if ok and u[14, p] < rates[4]:
                alivep[k] = False
                for i in range(N):
                    onp[k, i] = onp[i, k] = False
                    wp[k, i] = wp[i, k] = ZERO


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < workers:
            _POOL = ThreadPoolExecutor(workers, thread_name_prefix="foolkit-cppn")
        return _POOL


def _parallel(n: int, cost: int, work: Callable[[int, int], None]) -> None:
    """``work(start, stop)`` over ``range(n)`` in chunks, on ``torch.get_num_threads()`` threads (this
    one among them) when ``cost`` (pixels in all) gives each at least :data:`GRAIN`. Threads take
    chunks as they free up: one slowed down (a core still held by the spin-wait of torch's
    OpenMP threads after a forward, for a millisecond or so) just takes fewer."""
    threads = max(1, min(torch.get_num_threads(), cost // GRAIN, n))
    if threads == 1:
        work(0, n)
        return
    chunk = -(-n // (4 * threads))
    ticket = itertools.count()  # next() on it is atomic under the GIL

    def worker() -> None:
        while (start := next(ticket) * chunk) < n:
            work(start, min(n, start + chunk))

    helpers = [_pool(threads - 1).submit(worker) for _ in range(threads - 1)]
    worker()
    for f in helpers:
        f.result()


@functools.lru_cache(maxsize=16)
def _codes(activations: tuple[str, ...]) -> np.ndarray:
    return np.array([CODES[a] for a in activations], dtype=np.int64)


def render(w: torch.Tensor, act: torch.Tensor, alive: torch.Tensor, activations: tuple[str, ...], outputs: int,
           coords: torch.Tensor, *, quantize: bool = False) -> torch.Tensor:
    """Render ``P`` CPPNs on the CPU: ``w`` ``(P, N, N)`` float32 weights (0 where a connection is
    off), ``act`` ``(P, N)`` activation indices into ``activations``, ``alive`` ``(P, N)``, ``coords``
    ``(4, H*W)`` inputs → ``(P, 1 or 3, H*W)`` in [0, 1]: gray, or the three outputs as hue,
    lightness and saturation mapped to RGB. Outputs are the last ``outputs`` slots. ``quantize``:
    rounded to the 8-bit levels as :func:`foolkit.images.quantize` rounds them, bit for bit."""
    P, X = act.shape[0], coords.shape[1]
    out = torch.empty(P, outputs, X)
    if P and X:
        arrays = (w.detach().contiguous().numpy(), act.detach().contiguous().numpy(),
                  alive.detach().contiguous().numpy(), _codes(activations), coords.detach().contiguous().numpy(),
                  out.numpy(), quantize)
        _parallel(P, P * X, lambda start, stop: _render_range(*arrays, start, stop))
    return out


def resample_activations(act: torch.Tensor, alive: torch.Tensor, inputs: torch.Tensor, gen: torch.Generator, *,
                         rate: float, activations: int) -> None:
    """Give each live non-input node of ``act`` ``(P, N)`` a new activation, drawn uniformly from
    ``activations``, with probability ``rate``, in place (numbers from the counter-based generator,
    keyed by a draw from ``gen``)."""
    _resample(act.numpy(), alive.numpy(), inputs.numpy(), key_from(gen), np.float32(rate), activations)


def key_from(gen: torch.Generator) -> np.uint64:
    """A key for the counter-based generator, drawn from ``gen`` (so a run stays determined by its seed)."""
    return np.uint64(int(torch.randint(0, 2**62, (), generator=gen)))


def mutate_structure(genomes: dict[str, torch.Tensor], u: torch.Tensor, allowed: torch.Tensor,
                     hidden: torch.Tensor, rates: tuple[float, ...], weight_range: float,
                     activations: int) -> dict[str, torch.Tensor]:
    """:func:`foolkit.evolve.cppn.mutate_structure` in place, from the same ``(15, P)`` uniforms
    ``u``, and returns ``genomes``: ``allowed`` and ``hidden`` are the spec's permitted edges and
    hidden slots, ``rates`` its add-connection, delete-connection, change-connection, add-node and
    delete-node probabilities."""
    arrays = [genomes[k].numpy() for k in ("w", "on", "act", "alive")]
    rates_ = np.array(rates, dtype=np.float32)  # compared in float32, as torch does
    _structure(*arrays, u.contiguous().numpy(), allowed.numpy(), hidden.numpy(), rates_, np.float32(weight_range),
               activations)
    return genomes
