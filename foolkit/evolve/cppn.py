"""CPPNs (compositional pattern-producing networks) as batched tensors, rendered in one pass.

A population of CPPNs is a dict of tensors with a leading population axis ``P``; node ``k`` of
every genome is slot ``k`` of a fixed-capacity, topologically ordered graph::

    slots:  0 x   1 y   2 d   3 bias  |  4 .. 4+H-1 hidden  |  outputs (1 gray, 3 HLS colour)
    "w"     (P, N, N) float  weight of connection src → dst (row src, column dst), in [-wmax, wmax]; 0 where off
    "on"    (P, N, N) bool   connection enabled (only src < dst, never out of an output / into an input,
                             never to or from a dead node)
    "act"   (P, N)    int64  activation of each node (index into the spec's ``activations``)
    "alive" (P, N)    bool   node exists (inputs and outputs always do)

Because connections only run from lower to higher slots, evaluating slots in order is a
topological sort for every genome at once: :func:`render` walks each genome's live nodes in
slot order (a Python loop over *nodes*, never over genomes or pixels), and each step is one
sparse matrix product over the genomes that have that many nodes and all pixels. Inputs are
the pixel's x, y, distance from the centre and a bias, all in [-1, 1] (the original code fed
raw pixel indices; REFERENCES.md), so a genome renders the same picture at any resolution.

Mutations follow the paper's Sferes settings (REFERENCES.md): polynomial weight mutation
(p = 0.1, η = 15, weights in [-10, 10]), activation resampling (p = 0.1 per node), and per
genome add connection 0.5, delete connection 0.3, change connection 0.5, add node 0.5, delete
node 0.2. Each structural mutation picks its edge or slot for every genome at once (one random
number per genome, :func:`_pick`) and then edits only the genomes that take it.

Differences from the original Sferes code (README, "foolkit evolve"): activations all map to
[-1, 1] (Sferes: Gaussian ``exp(-z²)`` in [0, 1], linear ``clamp(z, -3, 3) / 3``); slot order makes
every CPPN feed-forward; change-connection is one try per genome; a split connection's new
incoming edge gets weight 1; and ``hidden`` caps the hidden nodes.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from foolkit import images
from foolkit.evolve import cppn_cpu, cppn_fused
from foolkit.evolve.operators import polynomial_mutation_

NUM_INPUTS = 4


def _linear(z: torch.Tensor) -> torch.Tensor:
    return z.clamp(-1.0, 1.0)


def _bipolar_sigmoid(z: torch.Tensor) -> torch.Tensor:
    return torch.tanh(0.5 * z)  # 2 / (1 + e^-z) - 1


def _gaussian(z: torch.Tensor) -> torch.Tensor:
    return 2.0 * torch.exp(-z * z) - 1.0


def _abs(z: torch.Tensor) -> torch.Tensor:
    return z.abs().clamp(max=1.0)


#: name → function; every activation maps to [-1, 1]. The paper used the first four; cosine and
#: abs are extras a spec may add (``CPPNSpec(activations=...)``, ``--cppn-activations``).
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sine": torch.sin,
    "sigmoid": _bipolar_sigmoid,
    "gaussian": _gaussian,
    "linear": _linear,
    "cosine": torch.cos,
    "abs": _abs,
}
#: the paper's set (REFERENCES.md): sine, bipolar sigmoid, Gaussian, clamped linear
PAPER_ACTIVATIONS = ("sine", "sigmoid", "gaussian", "linear")

# How render computes them, in place on contiguous row groups. Activation ``a`` of group ``g`` gives
# ``value = alpha_g * raw + beta_g`` with ``raw = fn_g(gain_g * z + phase_a)``; the gains are folded into
# the node's own incoming weights, the affine maps into its consumers' weights and the phases into the
# bias weight, so a group costs one in-place call (the Gaussian four). The bipolar sigmoid is tanh(z / 2):
# one call, where sigmoid needs a clamp first. The Gaussian's clamp changes nothing visible (e^-80 ~
# 2e-35) but keeps exp clear of underflow, which on CPU takes a slow path 25 times slower: CPPN
# pre-activations reach ±40 and more.
_GROUPS: list[tuple[Callable[[torch.Tensor], torch.Tensor], float, float, float]] = [  # (fn, gain, alpha, beta)
    (torch.Tensor.sin_, 1.0, 1.0, 0.0),
    (torch.Tensor.tanh_, 0.5, 1.0, 0.0),  # 2 / (1 + e^-z) - 1 = tanh(z / 2)
    (lambda t: t.square_().clamp_(max=80.0).neg_().exp_(), 1.0, 2.0, -1.0),
    (lambda t: t.clamp_(-1.0, 1.0), 1.0, 1.0, 0.0),
    (lambda t: t.abs_().clamp_(max=1.0), 1.0, 1.0, 0.0),
]
_RAW = {"sine": (0, 0.0), "sigmoid": (1, 0.0), "gaussian": (2, 0.0), "linear": (3, 0.0),
        "cosine": (0, math.pi / 2), "abs": (4, 0.0)}  # name: (group, phase); tests check them against ACTIVATIONS
assert list(_RAW) == list(ACTIVATIONS)


def check_activations(names: Sequence[str]) -> None:
    """ValueError unless ``names`` are distinct names from ACTIVATIONS (at least one)."""
    names = list(names)
    if not names or len(set(names)) < len(names) or any(a not in ACTIVATIONS for a in names):
        raise ValueError(f"bad CPPN activations {','.join(map(str, names)) or '(none)'}: use distinct names "
                         f"from {','.join(ACTIVATIONS)}")


@dataclass(frozen=True)
class CPPNSpec:
    """Shape and mutation rates of a CPPN population (keyword-only hyperparameters live here)."""

    outputs: int = 1  # 1: gray; 3: hue, lightness, saturation
    activations: tuple[str, ...] = PAPER_ACTIVATIONS  # names from ACTIVATIONS; genomes index into this
    hidden: int = 16  # capacity of hidden slots
    weight_range: float = 10.0
    weight_rate: float = 0.1
    weight_eta: float = 15.0
    activation_rate: float = 0.1
    add_connection: float = 0.5
    delete_connection: float = 0.3
    change_connection: float = 0.5
    add_node: float = 0.5
    delete_node: float = 0.2

    def __post_init__(self) -> None:
        check_activations(self.activations)
        object.__setattr__(self, "activations", tuple(self.activations))  # hashable: constants are cached per spec

    @property
    def structure_rates(self) -> tuple[float, float, float, float, float]:
        """The per-genome probabilities of add, delete and change connection, add and delete node."""
        return (self.add_connection, self.delete_connection, self.change_connection, self.add_node, self.delete_node)

    @property
    def nodes(self) -> int:
        return NUM_INPUTS + self.hidden + self.outputs

    def kinds(self, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Bool masks ``(N,)`` of input, hidden and output slots."""
        idx = torch.arange(self.nodes, device=device)
        inputs = idx < NUM_INPUTS
        outputs = idx >= NUM_INPUTS + self.hidden
        return inputs, ~inputs & ~outputs, outputs

    def allowed(self, device: torch.device | str) -> torch.Tensor:
        """``(N, N)`` bool: which src → dst connections the topology permits."""
        inputs, _, outputs = self.kinds(device)
        idx = torch.arange(self.nodes, device=device)
        return (idx[:, None] < idx[None, :]) & ~outputs[:, None] & ~inputs[None, :]


def sample(spec: CPPNSpec, n: int, gen: torch.Generator, device: torch.device | str) -> dict[str, torch.Tensor]:
    """``n`` fresh CPPNs: inputs fully connected to the outputs, no hidden nodes, random weights
    in ``[-wmax, wmax]`` and random activations."""
    N = spec.nodes
    inputs, _, outputs = spec.kinds(device)
    w = (torch.rand((n, N, N), generator=gen, device=device) * 2 - 1) * spec.weight_range
    on = (inputs[:, None] & outputs[None, :]).expand(n, N, N).clone()
    act = torch.randint(len(spec.activations), (n, N), generator=gen, device=device)
    alive = (inputs | outputs).expand(n, N).clone()
    return {"w": w * on, "on": on, "act": act, "alive": alive}


def coordinates(height: int, width: int, device: torch.device | str) -> torch.Tensor:
    """``(4, H*W)`` CPPN inputs: x, y in [-1, 1], distance from the centre scaled to [-1, 1], bias 1."""
    ys = torch.linspace(-1.0, 1.0, height, device=device) if height > 1 else torch.zeros(1, device=device)
    xs = torch.linspace(-1.0, 1.0, width, device=device) if width > 1 else torch.zeros(1, device=device)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    d = torch.sqrt(x * x + y * y) * math.sqrt(2.0) - 1.0  # [0, √2] → [-1, 1]
    return torch.stack([x.flatten(), y.flatten(), d.flatten(), torch.ones(height * width, device=device)])


def activate(z: torch.Tensor, act: torch.Tensor, activations: Sequence[str] = tuple(ACTIVATIONS)) -> torch.Tensor:
    """Apply each row's activation the way :func:`render` computes it (gain and phase, the group's
    raw in-place function, then its affine map): ``z`` ``(P, X)``, ``act`` ``(P,)`` indices into
    ``activations`` → ``(P, X)`` in [-1, 1]."""
    out = torch.empty_like(z)
    for a, name in enumerate(activations):
        group, phase = _RAW[name]
        rows = (act == a).nonzero().squeeze(1)
        fn, gain, alpha, beta = _GROUPS[group]
        out.index_copy_(0, rows, fn(z.index_select(0, rows) * gain + phase) * alpha + beta)
    return out


def hls_to_rgb(h: torch.Tensor, l: torch.Tensor, s: torch.Tensor) -> torch.Tensor:  # noqa: E741
    """Vectorised ``colorsys.hls_to_rgb``: tensors in [0, 1] of one shape → stacked RGB on a new axis -3.

    colorsys's four hue segments (rise from m1 to m2, m2, fall back, m1) are the one ramp
    ``m1 + (m2 - m1) · clamp(min(6 hue, 4 - 6 hue), 0, 1)``: clamps and a minimum, which vectorise
    on the CPU, where the chain of three ``where`` per channel does not (it took most of a
    colour render's time there)."""
    m2 = torch.where(l <= 0.5, l * (1.0 + s), l + s - l * s)
    m1 = 2.0 * l - m2
    hue = torch.remainder(torch.stack([h + 1 / 3, h, h - 1 / 3], dim=-3), 1.0) * 6.0
    ramp = torch.minimum(hue, 4.0 - hue).clamp_(0.0, 1.0)
    rgb = (m2 - m1).unsqueeze(-3) * ramp + m1.unsqueeze(-3)
    return torch.where((s == 0).unsqueeze(-3), l.unsqueeze(-3).expand_as(rgb), rgb)


class _Constants(NamedTuple):
    inputs: torch.Tensor  # (N,) bool slot masks
    hidden: torch.Tensor
    slot: torch.Tensor  # (N,) slot numbers
    allowed: torch.Tensor  # (N, N) bool, as CPPNSpec.allowed
    group: torch.Tensor  # (A,) per activation of the spec: its render group,
    fold: torch.Tensor  # (4, A) and its alpha, beta, gain and phase
    inputs_ab: torch.Tensor  # (2, 1, NUM_INPUTS) alpha 1, beta 0 of the inputs
    bias_col: torch.Tensor  # (N,) 1 at the bias input, else 0


@functools.lru_cache(maxsize=32)
@torch.inference_mode(False)  # cached: ordinary tensors, even when first asked for inside an inference-mode loop
def _constants(spec: CPPNSpec, device: torch.device) -> _Constants:
    """What render and mutate need of a spec, made once per (spec, device)."""
    with warnings.catch_warnings():  # torch warns once per process that sparse CSR is "beta": use it up here
        warnings.simplefilter("ignore")
        torch.sparse_csr_tensor(torch.tensor([0, 0]), torch.tensor([], dtype=torch.long), torch.tensor([]), size=(1, 1))
    inputs, hidden, _ = spec.kinds(device)
    raw = [_RAW[name] for name in spec.activations]
    fold = [(_GROUPS[g][2], _GROUPS[g][3], _GROUPS[g][1], p) for g, p in raw]
    slot = torch.arange(spec.nodes, device=device)
    return _Constants(inputs, hidden, slot, spec.allowed(device), torch.tensor([g for g, _ in raw], device=device),
                      torch.tensor(fold, device=device).t().contiguous(),
                      torch.tensor([[1.0] * NUM_INPUTS, [0.0] * NUM_INPUTS], device=device).view(2, 1, NUM_INPUTS),
                      (slot == NUM_INPUTS - 1).float())


@functools.lru_cache(maxsize=8)
@torch.inference_mode(False)
def _coordinates(height: int, width: int, device: torch.device) -> torch.Tensor:
    return coordinates(height, width, device)


class Workspace:
    """A scratch buffer that :func:`render` reuses from call to call for its node values, when
    they are big and on the CPU.

    Every render needs ``(4 + nodes) × H × W`` floats. Above 32 MB, glibc's malloc hands out a
    fresh memory mapping every time, and its page faults cost as much as the rendering itself (a
    population of 1000 LeNet CPPNs, 50 MB, renders in 26 ms from a reused buffer and 43 ms from a
    fresh one; 32 colour CPPNs at 224 px in 124 and 145 ms). Below that malloc reuses freed memory
    by itself, and keeping a buffer aside made a whole generation slower (a LeNet generation of
    200 CPPNs, 10 MB, by 5% of its forward's time: the forward then works in colder memory), and
    on a GPU torch's caching allocator already reuses memory: both get a fresh tensor. The
    buffer grows with the renders asked for, and is replaced by a smaller one when a render
    needs less than a quarter of it (a one-off render at a big size is not held on to); one
    workspace per caller (not thread-safe)."""

    def __init__(self, *, min_bytes: int = 32 << 20) -> None:
        self.min_bytes = min_bytes
        self._buffer: torch.Tensor | None = None

    def get(self, numel: int, device: torch.device) -> torch.Tensor:
        """A 1-D float buffer of ``numel`` elements on ``device`` (its contents are garbage)."""
        if device.type != "cpu" or numel * 4 < self.min_bytes:
            return torch.empty(numel, device=device)
        size = 0 if self._buffer is None else self._buffer.numel()
        if size < numel or size > 4 * numel:  # too small, or far too big (after a one-off big render)
            self._buffer = None  # let the old buffer go before the new one is allocated
            self._buffer = _kept_buffer(numel + numel // 4, device)  # headroom: CPPNs grow
        return self._buffer[:numel]


@torch.inference_mode(False)  # an ordinary tensor: render writes into it in and out of inference mode
def _kept_buffer(numel: int, device: torch.device) -> torch.Tensor:
    return torch.empty(numel, device=device)


def render(genomes: dict[str, torch.Tensor], spec: CPPNSpec, height: int, width: int, *,
           quantize: bool = False, sparse: bool | None = None, workspace: Workspace | None = None,
           fused: bool | None = None) -> torch.Tensor:
    """Render every genome at ``height × width``: → ``(P, 1 or 3, H, W)`` in [0, 1]; with
    ``quantize``, rounded to 8-bit levels: :func:`foolkit.images.quantize` of the image, bit for
    bit, done by the fused kernels as they write the pixels (no extra passes).

    By default (``fused=None``, or ``fused=True``) this is one fused kernel: on a CUDA device
    with Triton :mod:`foolkit.evolve.cppn_fused` (no host sync, no buffer of node values), on the
    CPU with numba :mod:`foolkit.evolve.cppn_cpu` (one compiled loop per genome). Otherwise, and
    with ``fused=False``, the step-by-step torch render below.

    The work is proportional to the nodes and connections genomes actually have, not to the slot
    capacity. Every node value is one row of pixels in one buffer ``B``: rows 0-3 are the inputs,
    then, step by step, the ``j``-th live hidden node of every genome that has one, then the
    outputs. Within a step the rows are grouped by activation. Then:

    1. each genome's live hidden nodes are compacted (slot order is a topological order), and its
       connections gathered into a small dense ``(P, steps, sources)`` weight array;
    2. the affine part of each source's activation (``2 exp(-z²) - 1``: alpha 2, beta -1) is
       folded into the weights of its consumers, each node's gain (``tanh(z / 2)``) into its own
       and the cosine's phase into the bias weight;
    3. the connections become one sparse CSR matrix (rows: nodes, columns: rows of ``B``);
    4. each step is one sparse × dense product of its rows of that matrix with the rows of ``B``
       above it, written into its own rows, and one in-place call per activation group.

    So a step costs about eight kernel calls whatever the population, and each pixel of a node
    costs as many multiply-adds as the node has connections. Memory is ``(4 + nodes) × H × W``
    floats; chunk the population to bound it. Two host syncs per call (the sizes), none per step.
    ``sparse=False`` multiplies by the same matrix made dense (the default on devices without
    sparse CSR products, such as MPS). ``workspace`` keeps that memory from call to call
    (:class:`Workspace`); the returned images never share it.
    """
    w, act, alive = genomes["w"], genomes["act"], genomes["alive"]  # (w is 0 where "on" is off)
    P, N = act.shape
    O, X, I, G = spec.outputs, height * width, NUM_INPUTS, len(_GROUPS)
    dev = w.device
    if P == 0:
        return torch.empty(0, 3 if O == 3 else 1, height, width, device=dev)
    if fused or (fused is None and sparse is None):
        if cppn_fused.available(dev) and N <= cppn_fused.MAX_RENDER_NODES:
            rendered = cppn_fused.render(w, act, spec.activations, O, _coordinates(height, width, dev),
                                         quantize=quantize)
            return rendered.view(P, 3 if O == 3 else 1, height, width)
        if dev.type == "cpu" and cppn_cpu.available():
            rendered = cppn_cpu.render(w, act, alive, spec.activations, O, _coordinates(height, width, dev),
                                       quantize=quantize)
            return rendered.view(P, 3 if O == 3 else 1, height, width)
        if fused:
            raise RuntimeError(f"no fused CPPN render on {dev} for {N} slots (needs Triton on CUDA, for at most "
                               f"{cppn_fused.MAX_RENDER_NODES} slots, or numba on the CPU)")
    _, hidden, slot, _, group_of, fold, inputs_ab, bias_col = _constants(spec, dev)

    # 1. compact nodes: inputs, the genome's live hidden slots in order, outputs → (P, I + S) slots
    live = alive & hidden
    cum = live.cumsum(1)
    count = cum[:, -1]
    M = int(count.max())  # host sync 1: the most hidden nodes
    S = M + O  # steps: hidden nodes, then the outputs
    nodes = torch.empty(P, I + M + 1, dtype=torch.long, device=dev)
    nodes[:, :I] = slot[:I]
    nodes[:, I:] = N - 1  # padding: an output slot, which never feeds anything
    nodes.scatter_(1, torch.where(live, cum + (I - 1), I + M), slot.expand(P, N))  # the rest: to the spare column
    nodes = torch.cat([nodes[:, :I + M], slot[N - O:].expand(P, O)], 1)
    steps = torch.arange(S, device=dev)
    active = (count[:, None] > steps) | (steps >= M)  # (P, S): genome p has a node at step j
    # incoming[p, j, i]: weight into compact node I + j from compact node i. No mask needed: w is 0
    # wherever a connection is off, and so wherever i >= I + j (slot order is topological, and a
    # padding source is an output slot, which feeds nothing); a padding destination is input 0,
    # which nothing feeds, so the rows of absent nodes are 0
    dst = nodes[:, I:] * active
    flat = ((torch.arange(P, device=dev) * (N * N))[:, None, None]
            + nodes[:, None, :I + M] * N + dst[:, :, None]).view(-1)  # (P, S, I + M) into (P, N, N)
    incoming = w.view(-1).index_select(0, flat).view(P, S, I + M)
    act_c = act.gather(1, nodes[:, I:])  # (P, S)

    # 2. fold: node j sees alpha_i raw_i + beta_i of each source i, and computes raw_j = fn(gain_j z_j +
    # phase_j): scale each weight by gain_j alpha_i, and shift the bias weight (input 3) by
    # gain_j Σ_i w_ji beta_i + phase_j
    f = fold.index_select(1, act_c.view(-1)).view(4, P, S)  # alpha, beta, gain, phase of each node
    src = torch.cat([inputs_ab.expand(2, P, I), f[:2, :, :M]], 2)  # (2, P, I + M): alpha, beta of each source
    shift = torch.bmm(incoming, src[1, :, :, None]).squeeze(-1).mul_(f[2]).add_(f[3] * active)  # (P, S)
    incoming = torch.addcmul(shift[:, :, None] * bias_col[:I + M], incoming, f[2][:, :, None] * src[0][:, None, :])

    # 3. rows of B: step by step, the genomes active there, grouped by activation, in genome order
    keyed = torch.where(active, group_of.index_select(0, act_c.view(-1)).view(P, S), G)  # inactive: G
    seen = torch.nn.functional.one_hot(keyed, G + 1).cumsum(0)  # (P, S, G + 1): running count per group
    sizes = seen[-1, :, :G]  # (S, G) rows per (step, group)
    first = sizes.flatten().cumsum(0).view(S, G) - sizes  # first row of each (step, group), after the inputs
    pos = first.gather(1, keyed.clamp(max=G - 1).t()).t() + seen.gather(2, keyed[..., None]).squeeze(-1) - 1 + I
    per_step = incoming.bool().sum((0, 2))  # (S,) CSR entries: the nonzero (folded) weights
    meta = torch.cat([sizes.flatten(), per_step]).tolist()  # host sync 2: rows and entries per step
    T, per_step = sum(meta[:S * G]), meta[S * G:]
    E = sum(per_step)
    # the weight array's rows put in CSR row order (absent nodes: to a spare row T), so its nonzero
    # entries, read row by row, are the CSR entries in order
    row = torch.where(active, pos - I, T).view(-1)
    by_row = torch.empty(T + 1, I + M, device=dev).index_copy_(0, row, incoming.view(P * S, I + M))[:T]
    genome = torch.empty(T + 1, dtype=torch.long, device=dev).index_copy_(
        0, row, torch.arange(P, device=dev).repeat_interleave(S))[:T]
    source_row = torch.cat([slot[:I].expand(P, I), pos[:, :M]], 1)  # (P, I + M): row of B of each source
    nz = by_row.bool()
    entry = (torch.nonzero_static(nz.view(-1), size=E) if dev.type in ("cpu", "cuda")  # no host sync: E is known
             else nz.view(-1).nonzero()).squeeze(1)
    vals = by_row.view(-1).index_select(0, entry)
    cols = source_row.index_select(0, genome).view(-1).index_select(0, entry)
    crow = torch.zeros(T + 1, dtype=torch.long, device=dev)
    torch.cumsum(nz.sum(1), 0, out=crow[1:])
    if sparse is None:
        sparse = dev.type in ("cpu", "cuda")  # torch has sparse CSR × dense products there
    if not sparse:
        rows = torch.div(entry, I + M, rounding_mode="floor")

    # 4. the steps
    flat = workspace.get((I + T) * X, dev) if workspace is not None else torch.empty((I + T) * X, device=dev)
    B = flat.view(I + T, X)
    B[:I] = _coordinates(height, width, dev)
    r, e = I, 0  # first row and first entry of the step
    for j in range(S):
        counts, n, m = meta[j * G:(j + 1) * G], sum(meta[j * G:(j + 1) * G]), per_step[j]
        z = B[r:r + n]
        if sparse:
            a = torch.sparse_csr_tensor(crow[r - I:r - I + n + 1] - e, cols[e:e + m], vals[e:e + m], size=(n, r),
                                        check_invariants=False)
        else:  # the same matrix, dense
            a = torch.zeros(n, r, device=dev).index_put_((rows[e:e + m] - (r - I), cols[e:e + m]), vals[e:e + m],
                                                         accumulate=True)
        torch.addmm(z, a, B[:r], beta=0, out=z)  # twice as fast as mm(out=z) on CPU; beta=0 ignores z's garbage
        g0 = 0
        for (fn, _, alpha, beta), k in zip(_GROUPS, counts):
            if k:
                part = fn(z[g0:g0 + k])
                if j >= M and (alpha, beta) != (2.0, -1.0):  # an output: image = (alpha raw + beta + 1) / 2
                    part.mul_(alpha / 2).add_((beta + 1) / 2)
                g0 += k
        r, e = r + n, e + m
    out = B.index_select(0, pos[:, M:].reshape(-1)).view(P, O, height, width)
    if O == 3:
        out = hls_to_rgb(out[:, 0], out[:, 1], out[:, 2]).clamp(0.0, 1.0)
    return images.quantize(out) if quantize else out


def _outer_and(alive: torch.Tensor) -> torch.Tensor:
    """``alive[:, :, None] & alive[:, None, :]`` as a ``uint8`` product read back as bool: on CPU a
    broadcast bool ``&`` is four times slower, and so is any comparison that produces a bool."""
    a = alive.view(torch.uint8)
    return (a[:, :, None] * a[:, None, :]).view(torch.bool)


def _pick(candidates: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One uniformly random True position per row of ``candidates`` ``(P, M)`` bool, given one
    uniform ``u`` ``(P,)`` per row → ``(index (P,), found (P,) bool)`` (index is arbitrary where
    nothing is found): the ``r``-th True position, ``r = ⌊u · count⌋``."""
    cum = candidates.view(torch.uint8).cumsum(dim=1, dtype=torch.int32)  # bool → int directly is slow on CPU
    count = cum[:, -1]
    rank = torch.minimum((u * count).int() + 1, count)  # 1-based, ⌊u · count⌋ + 1 <= count but for rounding
    return torch.searchsorted(cum, rank[:, None]).squeeze(1), count > 0


def _edit(flat: torch.Tensor, take: torch.Tensor, col: torch.Tensor, value: torch.Tensor | float | bool) -> None:
    """``flat[p, col[p]] = value[p]`` in place for the genomes ``p`` that ``take`` the mutation
    (bool ``(P,)``); the others keep theirs. One gather and one scatter over the population: no
    host sync (indexing the takers would need their number on the host, and assigning a Python
    number through an index copies it to the device first, which waits as a sync does)."""
    idx = col.unsqueeze(1)
    value = value.unsqueeze(1) if isinstance(value, torch.Tensor) else value
    flat.scatter_(1, idx, torch.where(take.unsqueeze(1), value, flat.gather(1, idx)))


def mutate(genomes: dict[str, torch.Tensor], spec: CPPNSpec, gen: torch.Generator, *,
           rate_scale: float = 1.0) -> dict[str, torch.Tensor]:
    """Mutate every genome of the batch in place (DEAP's convention: vary copies) and return it:
    weights (:func:`~foolkit.evolve.operators.polynomial_mutation_` on the enabled connections),
    activations, then the structural mutations (:func:`mutate_structure`), each with its
    per-genome probability. ``rate_scale`` multiplies the per-gene weight and activation rates
    (the paper's rate halving). Off the CPU no step syncs with the host. Each step is a compiled
    kernel where one runs: on a CUDA GPU with Triton the weights are one pass
    (:mod:`foolkit.evolve.variation_fused`) and the activations and structure another
    (:func:`foolkit.evolve.cppn_fused.mutate_`); on the CPU with numba, loops over the genomes
    (:mod:`foolkit.evolve.variation_cpu`, :mod:`foolkit.evolve.cppn_cpu`). Both give the structural
    mutations of :func:`mutate_structure` bit for bit, from the same uniforms; the weights and
    activations draw their own random numbers."""
    w, on, act, alive = genomes["w"], genomes["on"], genomes["act"], genomes["alive"]
    P, N = act.shape
    A = len(spec.activations)
    dev = w.device
    inputs, hidden, _, allowed = _constants(spec, dev)[:4]
    wmax = spec.weight_range
    polynomial_mutation_(w, rate=spec.weight_rate * rate_scale, eta=spec.weight_eta, low=-wmax, up=wmax, gen=gen, mask=on)
    if (cppn_fused.available(dev) and N <= cppn_fused.MAX_NODES
            and all(t.is_contiguous() for t in (w, on, act, alive))):
        return cppn_fused.mutate_(genomes, torch.rand(15, P, generator=gen, device=dev), outputs=spec.outputs,
                                  rates=spec.structure_rates, weight_range=wmax, activations=A,
                                  activation_rate=spec.activation_rate * rate_scale, gen=gen)
    if dev.type == "cpu" and cppn_cpu.available():
        cppn_cpu.resample_activations(act, alive, inputs, gen, rate=spec.activation_rate * rate_scale, activations=A)
        return cppn_cpu.mutate_structure(genomes, torch.rand(15, P, generator=gen), allowed, hidden,
                                         spec.structure_rates, wmax, A)
    resample = (torch.rand((P, N), generator=gen, device=dev) < spec.activation_rate * rate_scale) & alive & ~inputs
    act.copy_(torch.where(resample, torch.randint(A, (P, N), generator=gen, device=dev), act))
    return mutate_structure(genomes, spec, torch.rand(15, P, generator=gen, device=dev))


def mutate_structure(genomes: dict[str, torch.Tensor], spec: CPPNSpec, u: torch.Tensor) -> dict[str, torch.Tensor]:
    """The structural mutations, in turn, in place, from uniforms ``u`` ``(15, P)`` (one row per
    use): add, delete and change connection, add and delete node. Each picks its edge or slot
    for every genome at once (:func:`_pick`) and edits only the genomes that take it: a masked
    scatter over the population (:func:`_edit`), so no host sync."""
    w, on, act, alive = genomes["w"], genomes["on"], genomes["act"], genomes["alive"]
    P, N = act.shape
    A = len(spec.activations)
    dev = w.device
    rows = torch.arange(P, device=dev)
    _, hidden, slot, allowed = _constants(spec, dev)[:4]
    wmax = spec.weight_range
    (u_add, u_add_take, u_add_w, u_del, u_del_take, u_chg, u_chg_end, u_chg_other, u_chg_take, u_split, u_slot,
     u_split_take, u_split_act, u_kill, u_kill_take) = u
    live_edges = allowed & _outer_and(alive)  # what the topology and the live nodes permit (nodes change last)
    w_flat, on_flat = w.view(P, N * N), on.view(P, N * N)  # views: edge src → dst is column src·N + dst

    # add connection
    edge, ok = _pick((live_edges & ~on).view(P, -1), u_add)
    take = (u_add_take < spec.add_connection) & ok
    _edit(on_flat, take, edge, True)
    _edit(w_flat, take, edge, (u_add_w * 2 - 1) * wmax)

    # delete connection
    edge, ok = _pick(on_flat, u_del)
    take = (u_del_take < spec.delete_connection) & ok
    _edit(on_flat, take, edge, False)
    _edit(w_flat, take, edge, 0.0)  # w stays 0 wherever a connection is off

    # change connection: move one end of an enabled connection to a free slot, keeping its weight
    edge, ok = _pick(on_flat, u_chg)
    src, dst = edge // N, edge % N
    keep_src = u_chg_end < 0.5
    free = live_edges & ~on
    ends = torch.where(keep_src[:, None], free[rows, src, :], free[rows, :, dst])  # (P, N) new dst or new src
    other, ok2 = _pick(ends, u_chg_other)
    moved = torch.where(keep_src, src * N + other, other * N + dst)
    take = (u_chg_take < spec.change_connection) & ok & ok2
    _edit(w_flat, take, moved, w_flat.gather(1, edge[:, None]).squeeze(1))
    _edit(w_flat, take, edge, 0.0)
    _edit(on_flat, take, edge, False)
    _edit(on_flat, take, moved, True)

    # add node: split an enabled connection a → b through a free hidden slot a < k < b
    vacant = hidden & ~alive
    cum = vacant.view(torch.uint8).cumsum(dim=1, dtype=torch.int32)  # vacant slots in [0, j]
    before = cum - vacant.view(torch.uint8)  # vacant slots in [0, j)
    between = (before[:, None, :] - cum[:, :, None]).clamp_(0, 1).to(torch.uint8).view(torch.bool)  # a vacancy in (a, b)
    edge, ok = _pick((on & between).view(P, -1), u_split)
    a, b = edge // N, edge % N
    k, ok2 = _pick(vacant & (slot[None] > a[:, None]) & (slot[None] < b[:, None]), u_slot)
    take = (u_split_take < spec.add_node) & ok & ok2
    _edit(w_flat, take, k * N + b, w_flat.gather(1, edge[:, None]).squeeze(1))
    _edit(w_flat, take, edge, 0.0)
    _edit(w_flat, take, a * N + k, min(1.0, wmax))  # identity-like, inside the weight range
    _edit(on_flat, take, edge, False)
    _edit(on_flat, take, a * N + k, True)
    _edit(on_flat, take, k * N + b, True)
    _edit(alive, take, k, True)
    _edit(act, take, k, (u_split_act * A).long().clamp_(max=A - 1))

    # delete node, with its connections
    k, ok = _pick(alive & hidden, u_kill)
    take = (u_kill_take < spec.delete_node) & ok
    dead = (slot[None] == k[:, None]) & take[:, None]  # (P, N): the node going, if any
    alive &= ~dead
    d = dead.view(torch.uint8)
    gone = (d[:, :, None] | d[:, None, :]).view(torch.bool)  # its row (out) and column (in)
    on &= ~gone
    w.masked_fill_(gone, 0.0)
    return genomes


def describe(genomes: dict[str, torch.Tensor], spec: CPPNSpec) -> dict[str, torch.Tensor]:
    """Mean hidden nodes and enabled connections per genome, and the share of genomes whose hidden
    slots are all taken (add-node cannot grow them: raise ``hidden`` if it is high), for logs: 0-d
    tensors on the genomes' device (no host sync: a caller reads them with its own)."""
    hidden = genomes["alive"].sum(1).float() - NUM_INPUTS - spec.outputs
    return {"hidden_nodes": hidden.mean(), "connections": genomes["on"].sum((1, 2)).float().mean(),
            "hidden_full": (hidden >= spec.hidden).float().mean()}
