"""The CPPN's GPU kernels (Triton), for CUDA devices: the render and the mutation.

:func:`foolkit.evolve.cppn.render` is built for the CPU: it compacts each genome's live nodes,
reads their sizes back (two host syncs) and runs one sparse product and a few in-place
activation calls per node step, about 160 kernel launches for LeNet-sized CPPNs. On a GPU those
launches and syncs, not the arithmetic, set its speed: 32768 LeNet CPPNs took 16 ms, twice the
LeNet forward of the same images, on an H100.

Here one program of :func:`render` renders ``BLOCK`` pixels of one genome. It walks every slot
in order (slot order is a topological order) and keeps, in registers, the pre-activation of every
node still to come: a computed node adds its value times its outgoing weights to all of them at
once (a zero weight is a connection that is off, so dead nodes and absent edges add nothing). It
reads each weight once and writes only the output pixels: no buffer of node values in memory, no
host sync, one launch. The arithmetic is the same as :func:`~foolkit.evolve.cppn.activate`'s,
without the weight folding, so the two renders agree to float32 round-off, which chains of
weights up to 10 amplify: up to about 4e-3 on CPPNs with 16 hidden nodes (half a level of an
8-bit image); the tests hold both to a float64 oracle.

:func:`mutate_` is the rest of :func:`foolkit.evolve.cppn.mutate` after the weights (which
:mod:`foolkit.evolve.variation_fused` mutates): the activations and the structural mutations,
in one launch. In torch those are about 60 passes over the whole population, 2.5 ms a
generation of 32768 LeNet CPPNs on an H100 and most of the launches of a generation of 4096.
One program holds one genome in registers and picks each mutation's edge or slot with a prefix
sum over its lanes; from the same uniforms it gives the torch passes' genomes bit for bit.

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
    from triton.language.extra import libdevice
except ImportError:  # pragma: no cover - torch's CUDA wheels bring triton; other builds may not
    triton = None

#: kernel codes of the activations, in ``cppn.ACTIVATIONS`` order (the tests check the two agree)
CODES = {"sine": 0, "sigmoid": 1, "gaussian": 2, "linear": 3, "cosine": 4, "abs": 5}
BLOCK = 128  # pixels per program, in two warps: the fastest of 64-512 × 1-8 warps on an H100 for
WARPS = 2  # 32768 LeNet CPPNs (3.4 ms; 3.9 ms at 256 × 4) and 256 colour ones at 224 px (1.3 ms)
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
#: most slots a genome may have for :func:`mutate_` and :func:`useful_flags`: they keep a genome's
#: slots as the bits of one int64 (``CPPNSpec(hidden=57)``, 55 with colour outputs); bigger genomes take
#: torch's mutation passes and a render that computes every node
MAX_NODES = 62
#: most slots a genome may have for :func:`render`, which unrolls its loop over the slots and keeps
#: a row of pre-activations a slot in registers: at 69 slots it compiles in 26 s to 208 registers a
#: thread, and beyond it grows out of the register file; bigger genomes take torch's step render
MAX_RENDER_NODES = 72


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
        """Activation ``code`` (see CODES) of ``z``; every one maps to [-1, 1]. ``code`` is one per
        program, so a branch: only its activation is computed (a chain of ``where`` computing all
        six doubled the kernel's instructions and registers, in the SASS for an H100)."""
        if code == 0:
            out = tl.sin(z)
        elif code == 1:  # 2 / (1 + e^-z) - 1 = tanh(z / 2) = 1 - 2 / (e^z + 1): e^z overflows to inf and gives 1
            out = 1.0 - 2.0 / (tl.exp(z) + 1.0)
        elif code == 2:
            out = 2.0 * tl.exp(-tl.minimum(z * z, 80.0)) - 1.0
        elif code == 3:
            out = tl.minimum(tl.maximum(z, -1.0), 1.0)
        elif code == 4:
            out = tl.cos(z)
        else:
            out = tl.minimum(tl.abs(z), 1.0)
        return out

    if INTERPRETED:  # the interpreter has no libdevice: ties to even from floor, exact in numpy (no FMA)

        @triton.jit
        def _rint(y):
            r = tl.floor(y)
            f = y - r
            odd = (r - 2.0 * tl.floor(r * 0.5)) == 1.0
            return tl.where((f > 0.5) | ((f == 0.5) & odd), r + 1.0, r)
    else:

        @triton.jit
        def _rint(y):
            return libdevice.rint(y)  # cvt.rni: ties to even, as torch.round

    @triton.jit
    def _level(v):
        """``v`` in [0, 1] rounded to the nearest 8-bit level ``k / 255`` as foolkit.images.quantize
        rounds it: the division correctly rounded (Triton's ``/`` is an approximation)."""
        return tl.math.div_rn(_rint(v * 255.0), tl.full(v.shape, 255.0, tl.float32))

    @triton.jit
    def _hls_channel(hue, m1, m2):
        hue = hue - tl.floor(hue)
        rise = m1 + (m2 - m1) * hue * 6.0
        fall = m1 + (m2 - m1) * (2.0 / 3.0 - hue) * 6.0
        return tl.where(hue < 1.0 / 6.0, rise, tl.where(hue < 0.5, m2, tl.where(hue < 2.0 / 3.0, fall, m1)))

    @triton.jit
    def _render_kernel(w_ptr, act_ptr, codes_ptr, coords_ptr, useful_ptr, out_ptr, X, N: tl.constexpr,
                       OUTPUTS: tl.constexpr, ROWS: tl.constexpr, BLOCK_X: tl.constexpr, QUANTIZE: tl.constexpr,
                       USE_FLAGS: tl.constexpr):
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
        if USE_FLAGS:
            useful = tl.load(useful_ptr + p)  # bit k: slot k reaches an output (useful_flags)
        for j in tl.static_range(N - 4):  # slot order is a topological order
            z = tl.sum(tl.where(rows[:, None] == j, acc, 0.0), axis=0)
            if j < N - 4 - OUTPUTS:  # a hidden node feeds later ones (zero weights where off or dead)
                if USE_FLAGS:
                    keep = ((useful >> (4 + j)) & 1) != 0
                else:
                    keep = tl.full((), 1, tl.int1)
                if keep:  # the same for all the program's pixels: a branch that does not diverge
                    value = _activate(z, tl.load(codes_ptr + tl.load(act_ptr + p * N + 4 + j)))
                    out_w = tl.load(w_row + (4 + j) * N + 4 + rows, mask=live, other=0.0)
                    acc += out_w[:, None] * value[None, :]
            else:
                value = _activate(z, tl.load(codes_ptr + tl.load(act_ptr + p * N + 4 + j)))
            if OUTPUTS == 3:
                if j == N - 7:
                    h = (value + 1.0) * 0.5
                if j == N - 6:
                    lum = (value + 1.0) * 0.5
        base = out_ptr + p * (3 if OUTPUTS == 3 else 1) * X + offs
        if OUTPUTS == 1:
            v = (value + 1.0) * 0.5
            if QUANTIZE:
                v = _level(v)
            tl.store(base, v, mask=mask)
        else:  # hue, lightness, saturation in [0, 1] → RGB, as cppn.hls_to_rgb
            s = (value + 1.0) * 0.5
            m2 = tl.where(lum <= 0.5, lum * (1.0 + s), lum + s - lum * s)
            m1 = 2.0 * lum - m2
            gray = s == 0.0
            for c in tl.static_range(3):
                v = _hls_channel(h + (1.0 - c) / 3.0, m1, m2)
                v = tl.minimum(tl.maximum(tl.where(gray, lum, v), 0.0), 1.0)
                if QUANTIZE:
                    v = _level(v)
                tl.store(base + c * X, v, mask=mask)

    @triton.jit
    def _useful_kernel(w_ptr, out_ptr, output_bits, N: tl.constexpr, OUTPUTS: tl.constexpr, BLOCK_E: tl.constexpr):
        # one genome a program: from the last hidden slot down, a slot is useful when it feeds a
        # useful one (a non-zero weight: connections that are off, and dead nodes', are 0)
        p = tl.program_id(0).to(tl.int64)
        e = tl.arange(0, BLOCK_E)
        inside = e < N * N
        src = e // N
        dst = e % N
        feeds = tl.load(w_ptr + p * (N * N) + e, mask=inside, other=0.0) != 0.0
        useful = tl.full((), output_bits, tl.int64)
        for k in tl.static_range(N - OUTPUTS - 1, 3, -1):
            hit = tl.max(tl.where(feeds & (src == k) & _bits_at(useful, dst), 1, 0), 0)
            useful = useful | (hit.to(tl.int64) << k)
        tl.store(out_ptr + p, useful)

    @triton.jit
    def _bits_at(bits, i):
        """Bit ``i`` (a vector of slot numbers) of the int64 ``bits``, as bool."""
        return ((bits >> i.to(tl.int64)) & 1) != 0

    @triton.jit
    def _choose(candidates, index, u):
        """One of the True lanes of ``candidates``: the r-th in lane order, r = ⌊u · count⌋ + 1 capped
        at the count, as cppn._pick (in float32, as there) → (its ``index``, found); (0, False) when
        there are none."""
        c = candidates.to(tl.int32)
        n = tl.sum(c, 0)
        r = tl.minimum((u * n.to(tl.float32)).to(tl.int32), n - 1)
        return tl.sum(tl.where(candidates & (tl.cumsum(c, 0) == r + 1), index, 0), 0), n > 0

    @triton.jit
    def _weight_at(w, e, edge):
        """``w[edge]`` out of the register vector ``w`` (lanes ``e``): exact, the sign of a zero too."""
        return tl.max(tl.where(e == edge, w, float("-inf")), 0)

    @triton.jit
    def _mutate_kernel(w_ptr, on_ptr, act_ptr, alive_ptr, u_ptr, rates_ptr, seed_ptr, P, wmax, split_weight,
                       activation_rate, A, N: tl.constexpr, OUTPUTS: tl.constexpr, BLOCK_E: tl.constexpr,
                       BLOCK_S: tl.constexpr):
        # one genome per program, held in registers: its edges (lane e = src·N + dst) and its slots
        p = tl.program_id(0)
        e = tl.arange(0, BLOCK_E)
        edge_in = e < N * N
        src = e // N
        dst = e % N
        slots = tl.arange(0, BLOCK_S)
        slot_in = slots < N
        hidden = (slots >= 4) & (slots < N - OUTPUTS)
        # what the topology permits: forward, never out of an output, never into an input (CPPNSpec.allowed)
        allowed = edge_in & (src < dst) & (src < N - OUTPUTS) & (dst >= 4)
        genome = p.to(tl.int64) * (N * N)
        w = tl.load(w_ptr + genome + e, mask=edge_in, other=0.0)
        on = tl.load(on_ptr + genome + e, mask=edge_in, other=0) != 0
        act = tl.load(act_ptr + p.to(tl.int64) * N + slots, mask=slot_in, other=0)
        alive = tl.load(alive_ptr + p.to(tl.int64) * N + slots, mask=slot_in, other=0) != 0
        one = tl.full((BLOCK_S,), 1, tl.int64)
        alive_bits = tl.sum(tl.where(alive, one << slots.to(tl.int64), 0), 0)
        hidden_bits = tl.sum(tl.where(hidden, one << slots.to(tl.int64), 0), 0)

        # activations: each live non-input node resampled with probability activation_rate
        u_pick, u_new, _, _ = tl.rand4x(tl.load(seed_ptr), p * N + slots)
        resample = alive & (slots >= 4) & (u_pick < activation_rate)
        act = tl.where(resample, tl.minimum((u_new * A).to(tl.int64), A - 1), act)

        # the structural mutations (cppn.mutate_structure), from the uniforms u[i, p]
        u = u_ptr + p
        live_edges = allowed & _bits_at(alive_bits, src) & _bits_at(alive_bits, dst)
        # add connection
        edge, ok = _choose(live_edges & ~on, e, tl.load(u))
        at = tl.where(ok & (tl.load(u + P) < tl.load(rates_ptr)), e == edge, False)
        on = on | at
        w = tl.where(at, (tl.load(u + 2 * P) * 2.0 - 1.0) * wmax, w)
        # delete connection
        edge, ok = _choose(on, e, tl.load(u + 3 * P))
        at = tl.where(ok & (tl.load(u + 4 * P) < tl.load(rates_ptr + 1)), e == edge, False)
        on = on & ~at
        w = tl.where(at, 0.0, w)
        # change connection: move one end of an enabled connection to a free slot, keeping its weight.
        # The free edges out of its source (into its destination) are, in lane order, in order of
        # their new destination (source): the same r-th candidate as cppn's scan over the slots
        edge, ok = _choose(on, e, tl.load(u + 5 * P))
        keep_src = tl.load(u + 6 * P) < 0.5
        ends = live_edges & ~on & tl.where(keep_src, src == edge // N, dst == edge % N)
        moved, ok2 = _choose(ends, e, tl.load(u + 7 * P))
        take = ok & ok2 & (tl.load(u + 8 * P) < tl.load(rates_ptr + 2))
        at_old = tl.where(take, e == edge, False)
        at_new = tl.where(take, e == moved, False)
        w = tl.where(at_new, _weight_at(w, e, edge), w)
        w = tl.where(at_old, 0.0, w)
        on = (on & ~at_old) | at_new
        # add node: split an enabled connection a → b through a vacant hidden slot a < k < b
        vacant_bits = hidden_bits & ~alive_bits
        span = tl.maximum(dst - src - 1, 0).to(tl.int64)  # the slots strictly between
        between = ((vacant_bits >> (src + 1).to(tl.int64)) & ((tl.full((BLOCK_E,), 1, tl.int64) << span) - 1)) != 0
        edge, ok = _choose(on & between, e, tl.load(u + 9 * P))
        a = edge // N
        b = edge % N
        k, ok2 = _choose(_bits_at(vacant_bits, slots) & slot_in & (slots > a) & (slots < b), slots,
                         tl.load(u + 10 * P))
        take = ok & ok2 & (tl.load(u + 11 * P) < tl.load(rates_ptr + 3))
        at_old = tl.where(take, e == edge, False)
        at_in = tl.where(take, e == a * N + k, False)
        at_out = tl.where(take, e == k * N + b, False)
        at_node = tl.where(take, slots == k, False)
        w = tl.where(at_out, _weight_at(w, e, edge), w)
        w = tl.where(at_old, 0.0, w)
        w = tl.where(at_in, split_weight, w)
        on = (on & ~at_old) | at_in | at_out
        alive = alive | at_node
        act = tl.where(at_node, tl.minimum((tl.load(u + 12 * P) * A).to(tl.int64), A - 1), act)
        # delete node, with its connections
        k, ok = _choose(alive & hidden, slots, tl.load(u + 13 * P))
        take = ok & (tl.load(u + 14 * P) < tl.load(rates_ptr + 4))
        alive = alive & ~tl.where(take, slots == k, False)
        gone = tl.where(take, (src == k) | (dst == k), False)
        on = on & ~gone
        w = tl.where(gone, 0.0, w)

        tl.store(w_ptr + genome + e, w, mask=edge_in)
        tl.store(on_ptr + genome + e, on.to(tl.uint8), mask=edge_in)
        tl.store(act_ptr + p.to(tl.int64) * N + slots, act, mask=slot_in)
        tl.store(alive_ptr + p.to(tl.int64) * N + slots, alive.to(tl.uint8), mask=slot_in)


def launching_on(device: torch.device) -> contextlib.AbstractContextManager:
    """The context a kernel for tensors on ``device`` is launched in: Triton launches on the
    current CUDA device, which for ``cuda:1`` tensors must be made ``cuda:1`` first."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def philox_seed(gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """A key for the kernels' Philox random numbers, drawn from ``gen`` on the device (no host sync),
    so a run that uses them is still determined by its seed."""
    return torch.randint(0, 2**31 - 2, (1,), generator=gen, device=device)


@functools.lru_cache(maxsize=16)
def _rates(rates: tuple[float, ...], device: torch.device) -> torch.Tensor:
    return torch.tensor(rates, dtype=torch.float32, device=device)  # compared in float32, as torch does


@functools.lru_cache(maxsize=16)
def _codes(activations: tuple[str, ...], device: torch.device) -> torch.Tensor:
    return torch.tensor([CODES[a] for a in activations], dtype=torch.int32, device=device)


def render(w: torch.Tensor, act: torch.Tensor, activations: tuple[str, ...], outputs: int,
           coords: torch.Tensor, *, quantize: bool = False, skip_dead_ends: bool = True) -> torch.Tensor:
    """Render ``P`` CPPNs: ``w`` ``(P, N, N)`` float weights (0 where a connection is off), ``act``
    ``(P, N)`` activation indices into ``activations``, ``coords`` ``(4, H*W)`` inputs → ``(P, 1 or
    3, H*W)`` in [0, 1]. Outputs are the last ``outputs`` slots. ``quantize``: rounded to the 8-bit
    levels as :func:`foolkit.images.quantize` rounds them, bit for bit (no extra passes).

    Hidden nodes that reach no output are skipped (``skip_dead_ends``, for genomes of at most
    :data:`MAX_NODES` slots): their flags come from :func:`useful_flags`, a launch of its own
    (after 300 generations a LeNet CPPN has 14.9 live hidden nodes, 13.0 of them useful). The
    images are the same bit for bit either way."""
    P, N = act.shape
    X = coords.shape[1]
    out = torch.empty(P, 3 if outputs == 3 else 1, X, device=w.device)
    if P and X:
        w = w.contiguous()
        flags = skip_dead_ends and N <= MAX_NODES
        useful = useful_flags(w, outputs) if flags else w
        grid = (P, triton.cdiv(X, BLOCK))
        with launching_on(w.device):
            _render_kernel[grid](w, act.contiguous(), _codes(activations, w.device), coords.contiguous(), useful, out,
                                 X, N=N, OUTPUTS=outputs, ROWS=triton.next_power_of_2(N - 4), BLOCK_X=BLOCK,
                                 QUANTIZE=quantize, USE_FLAGS=flags, num_warps=WARPS)
    return out


def useful_flags(w: torch.Tensor, outputs: int) -> torch.Tensor:
    """``(P,)`` int64: bit ``k`` set where slot ``k`` of the genome reaches an output through
    non-zero weights (the outputs' own bits too; the inputs' are not needed), from ``w`` ``(P, N,
    N)`` contiguous with at most :data:`MAX_NODES` slots. One program a genome."""
    P, N = w.shape[0], w.shape[1]
    out = torch.empty(P, dtype=torch.int64, device=w.device)
    if P:
        with launching_on(w.device):
            _useful_kernel[(P,)](w, out, ((1 << outputs) - 1) << (N - outputs), N=N, OUTPUTS=outputs,
                                 BLOCK_E=triton.next_power_of_2(N * N))
    return out


def mutate_(genomes: dict[str, torch.Tensor], u: torch.Tensor, *, outputs: int, rates: tuple[float, ...],
            weight_range: float, activations: int, activation_rate: float,
            gen: torch.Generator) -> dict[str, torch.Tensor]:
    """:func:`foolkit.evolve.cppn.mutate` but for the weights, in one pass, in place: each live
    non-input node's activation resampled with probability ``activation_rate`` (Philox numbers
    keyed from ``gen``), then :func:`foolkit.evolve.cppn.mutate_structure` from the same ``(15, P)``
    uniforms ``u``, bit for bit. ``rates``: the add-connection, delete-connection,
    change-connection, add-node and delete-node probabilities. One program holds one genome in
    registers (its edges as one vector, its slots as another) and picks each mutation's edge or
    slot with a prefix sum. Genomes must be contiguous with at most :data:`MAX_NODES` slots."""
    w, on, act, alive = genomes["w"], genomes["on"], genomes["act"], genomes["alive"]
    P, N = act.shape
    if N > MAX_NODES or not all(t.is_contiguous() for t in (w, on, act, alive)):
        raise ValueError(f"the fused CPPN mutation takes contiguous genomes of at most {MAX_NODES} slots")
    dev = w.device
    seed = philox_seed(gen, dev)
    if P:
        block = triton.next_power_of_2(N * N)
        with launching_on(dev):
            _mutate_kernel[(P,)](w, on.view(torch.uint8), act, alive.view(torch.uint8), u.contiguous(),
                                 _rates(tuple(rates), dev), seed, P, float(weight_range), min(1.0, float(weight_range)),
                                 float(activation_rate), activations, N=N, OUTPUTS=outputs, BLOCK_E=block,
                                 BLOCK_S=triton.next_power_of_2(N), num_warps=4 if block <= 1024 else 8)
    return genomes
