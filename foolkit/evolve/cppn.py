"""CPPNs (compositional pattern-producing networks) as batched tensors, rendered in one pass.

A population of CPPNs is a dict of tensors with a leading population axis ``P``; node ``k`` of
every genome is slot ``k`` of a fixed-capacity, topologically ordered graph::

    slots:  0 x   1 y   2 d   3 bias  |  4 .. 4+H-1 hidden  |  outputs (1 gray, 3 HLS colour)
    "w"     (P, N, N) float  weight of connection src → dst (row src, column dst), in [-wmax, wmax]
    "on"    (P, N, N) bool   connection enabled (only src < dst, never out of an output / into an input)
    "act"   (P, N)    int64  activation of each node (index into ACTIVATIONS)
    "alive" (P, N)    bool   node exists (inputs and outputs always do)

Because connections only run from lower to higher slots, evaluating slots in order is a
topological sort for every genome at once: :func:`render` walks each genome's live nodes in
slot order (a Python loop over *nodes*, never over genomes or pixels), and each step is one
batched matrix product over the genomes that have that many nodes and all pixels. Inputs are the pixel's x, y, distance from the centre and a bias, all in
[-1, 1] (the original code fed raw pixel indices; REFERENCES.md), so a genome renders the same
picture at any resolution.

Mutations follow the paper's Sferes settings (REFERENCES.md): polynomial weight mutation
(p = 0.1, η = 15, weights in [-10, 10]), activation resampling (p = 0.1 per node), and per
genome add connection 0.5, delete connection 0.3, change connection 0.5, add node 0.5, delete
node 0.2. Each structural mutation picks its edge or slot for every genome at once (one random
number per genome, :func:`_pick`) and then edits only the genomes that take it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

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


#: name → function; every activation maps to [-1, 1].
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sine": torch.sin,
    "sigmoid": _bipolar_sigmoid,
    "gaussian": _gaussian,
    "linear": _linear,
    "cosine": torch.cos,
    "abs": _abs,
}
_FUNCS = list(ACTIVATIONS.values())
#: the same functions, in place (the render's hot loop: no allocation per group); checked against ACTIVATIONS
_IN_PLACE: list[Callable[[torch.Tensor], torch.Tensor]] = [
    torch.Tensor.sin_,
    lambda t: t.sigmoid_().mul_(2.0).sub_(1.0),  # as tanh(z / 2), faster
    lambda t: t.square_().neg_().exp_().mul_(2.0).sub_(1.0),
    lambda t: t.clamp_(-1.0, 1.0),
    torch.Tensor.cos_,
    lambda t: t.abs_().clamp_(max=1.0),
]


@dataclass(frozen=True)
class CPPNSpec:
    """Shape and mutation rates of a CPPN population (keyword-only hyperparameters live here)."""

    outputs: int = 1  # 1: gray; 3: hue, lightness, saturation
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
    act = torch.randint(len(_FUNCS), (n, N), generator=gen, device=device)
    alive = (inputs | outputs).expand(n, N).clone()
    return {"w": w * on, "on": on, "act": act, "alive": alive}


def coordinates(height: int, width: int, device: torch.device | str) -> torch.Tensor:
    """``(4, H*W)`` CPPN inputs: x, y in [-1, 1], distance from the centre scaled to [-1, 1], bias 1."""
    ys = torch.linspace(-1.0, 1.0, height, device=device) if height > 1 else torch.zeros(1, device=device)
    xs = torch.linspace(-1.0, 1.0, width, device=device) if width > 1 else torch.zeros(1, device=device)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    d = torch.sqrt(x * x + y * y) * math.sqrt(2.0) - 1.0  # [0, √2] → [-1, 1]
    return torch.stack([x.flatten(), y.flatten(), d.flatten(), torch.ones(height * width, device=device)])


def activate(z: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """Apply each row's activation: ``z`` ``(P, X)``, ``act`` ``(P,)`` → ``(P, X)`` in [-1, 1]."""
    out = torch.empty_like(z)
    _activate_groups(z, out, act.argsort(stable=True), torch.bincount(act, minlength=len(_FUNCS)).tolist())
    return out


def hls_to_rgb(h: torch.Tensor, l: torch.Tensor, s: torch.Tensor) -> torch.Tensor:  # noqa: E741
    """Vectorised ``colorsys.hls_to_rgb``: tensors in [0, 1] of one shape → stacked RGB on a new axis -3."""
    m2 = torch.where(l <= 0.5, l * (1.0 + s), l + s - l * s)
    m1 = 2.0 * l - m2

    def channel(hue: torch.Tensor) -> torch.Tensor:
        hue = torch.remainder(hue, 1.0)
        return torch.where(hue < 1 / 6, m1 + (m2 - m1) * hue * 6.0,
                           torch.where(hue < 0.5, m2, torch.where(hue < 2 / 3, m1 + (m2 - m1) * (2 / 3 - hue) * 6.0, m1)))

    rgb = torch.stack([channel(h + 1 / 3), channel(h), channel(h - 1 / 3)], dim=-3)
    return torch.where((s == 0).unsqueeze(-3), l.unsqueeze(-3).expand_as(rgb), rgb)


def _mask(m: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Bool mask as 0/1 in ``like``'s dtype (read as ``uint8`` first: bool → float is slow on CPU)."""
    return m.view(torch.uint8).to(like.dtype)


def _activate_groups(z: torch.Tensor, dst: torch.Tensor, order: torch.Tensor, counts: list[int]) -> None:
    """``dst[order] = activation(z[order])``: rows ``order`` of ``z`` are grouped by activation
    (``counts[i]`` rows of activation ``i`` in turn), so each row is computed once, by its own function."""
    grouped = z.index_select(0, order)
    for f, part in zip(_IN_PLACE, grouped.split(counts)):
        if part.numel():
            f(part)
    dst.index_copy_(0, order, grouped)


def render(genomes: dict[str, torch.Tensor], spec: CPPNSpec, height: int, width: int) -> torch.Tensor:
    """Render every genome at ``height × width``: → ``(P, 1 or 3, H, W)`` in [0, 1].

    The work is proportional to the nodes genomes actually have, not to the slot capacity:

    1. each genome's live hidden nodes are compacted to the front, in slot order (still a
       topological order), and the genomes are sorted by how many they have, most first;
    2. the inputs' contribution to every node of every genome is one matrix product;
    3. compact step ``j`` adds the contributions of hidden nodes ``0..j-1`` (one batched product)
       and applies the activations, for the prefix of genomes that have a ``j``-th node only
       (a view, no copy); the output nodes come last, for every genome.

    Memory is ``P × (most hidden nodes + outputs) × H × W`` floats; chunk the population to bound it.
    Two host syncs per call (the step sizes), none per node.
    """
    w, on, act, alive = genomes["w"], genomes["on"], genomes["act"], genomes["alive"]
    P, N = act.shape
    O, X = spec.outputs, height * width
    dev = w.device
    _, hidden, _ = spec.kinds(dev)
    slot = torch.arange(N, device=dev)

    live = alive & hidden
    count = live.sum(1)
    by_size = count.argsort(descending=True, stable=True)  # genomes with the most hidden nodes first
    live, count = live.index_select(0, by_size), count.index_select(0, by_size)
    M = int(count[0]) if P else 0  # host sync 1
    # compact order of every genome's nodes: inputs, its live hidden slots ascending, outputs
    key = torch.where(live, slot, slot + N).masked_fill(~hidden, 3 * N)
    order = torch.cat([slot[:NUM_INPUTS].expand(P, -1), key.argsort(dim=1)[:, :M],
                       slot[N - O:].expand(P, -1)], dim=1)  # (P, L), L = 4 + M + O
    # incoming[p, j, i]: weight into compact node 4 + j from compact node i, one gather from (P, N, N)
    g, src, dst = by_size[:, None, None], order[:, None, :], order[:, NUM_INPUTS:, None]
    live_c = alive.index_select(0, by_size).gather(1, order)  # (P, L), L = 4 + M + O
    enabled = on[g, src, dst] & live_c[:, None, :] & live_c[:, NUM_INPUTS:, None]
    incoming = w[g, src, dst] * _mask(enabled, w)  # (P, M + O, L)
    act_c = act.index_select(0, by_size).gather(1, order[:, NUM_INPUTS:])  # (P, M + O)

    # rows active at each step: the genomes with more than j hidden nodes, then all of them for outputs
    steps = torch.arange(M + O, device=dev)
    active = (count[:, None] > steps[None, :]) | (steps[None, :] >= M)
    keyed = torch.where(active, act_c, torch.full_like(act_c, len(_FUNCS)))  # inactive rows sort last
    groups = keyed.argsort(dim=0, stable=True)  # (P, M + O): per step, active rows grouped by activation
    sizes = torch.nn.functional.one_hot(keyed, len(_FUNCS) + 1).sum(0)[:, :len(_FUNCS)].tolist()  # host sync 2

    values = torch.matmul(incoming[:, :, :NUM_INPUTS], coordinates(height, width, dev))  # (P, M + O, X)
    for j in range(M + O):
        n = sum(sizes[j])
        z = values[:n, j]
        k = min(j, M)  # hidden sources of node j (outputs never feed anything)
        if k:
            z += torch.bmm(incoming[:n, j:j + 1, NUM_INPUTS:NUM_INPUTS + k], values[:n, :k]).squeeze(1)
        _activate_groups(z, z, groups[:n, j], sizes[j])
    out = torch.empty(P, O, X, device=dev)
    out.index_copy_(0, by_size, values[:, M:])
    out = ((out + 1.0) * 0.5).clamp(0.0, 1.0).view(P, O, height, width)
    if O == 3:
        return hls_to_rgb(out[:, 0], out[:, 1], out[:, 2]).clamp(0.0, 1.0)
    return out


def _pick(candidates: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One uniformly random True position per row of ``candidates`` ``(P, M)`` bool →
    ``(index (P,), found (P,) bool)`` (index is arbitrary where nothing is found). One random
    number per row: the ``r``-th True position, ``r`` uniform below the row's count."""
    cum = candidates.view(torch.uint8).cumsum(dim=1, dtype=torch.int32)  # bool → int directly is slow on CPU
    count = cum[:, -1]
    r = (torch.rand(count.shape, generator=gen, device=cum.device) * count).int()
    r = torch.minimum(r, count - 1).clamp_min(0)
    index = torch.searchsorted(cum, (r + 1)[:, None]).squeeze(1)
    return index.clamp_max(candidates.shape[1] - 1), count > 0


def _coin(p: float, n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device) < p


def _takers(p: float, possible: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Indices of the genomes that take a mutation: a coin with probability ``p`` per genome,
    where the mutation is ``possible``. (One host sync; the edits then touch only these rows.)"""
    return (_coin(p, possible.shape[0], gen, possible.device) & possible).nonzero().squeeze(1)


def mutate(genomes: dict[str, torch.Tensor], spec: CPPNSpec, gen: torch.Generator, *,
           rate_scale: float = 1.0) -> dict[str, torch.Tensor]:
    """Mutate every genome of the batch (returns new tensors): weights, activations, then the
    structural mutations, each with its per-genome probability. ``rate_scale`` multiplies the
    per-gene weight and activation rates (the paper's rate halving)."""
    w, on, act, alive = (genomes[k].clone() for k in ("w", "on", "act", "alive"))
    P, N = act.shape
    dev = w.device
    rows = torch.arange(P, device=dev)
    slot = torch.arange(N, device=dev)
    inputs, hidden, _ = spec.kinds(dev)
    wmax = spec.weight_range

    # weights and activations
    polynomial_mutation_(w, rate=spec.weight_rate * rate_scale, eta=spec.weight_eta, low=-wmax, up=wmax, gen=gen, mask=on)
    resample = (torch.rand((P, N), generator=gen, device=dev) < spec.activation_rate * rate_scale) & alive & ~inputs
    act = torch.where(resample, torch.randint(len(_FUNCS), (P, N), generator=gen, device=dev), act)

    # the connections the topology and the live nodes permit (nodes change only further down)
    allowed = spec.allowed(dev)
    live_edges = allowed & alive[:, :, None] & alive[:, None, :]

    w_flat, on_flat = w.view(P, N * N), on.view(P, N * N)  # views: edge src → dst is column src·N + dst

    # add connection
    edge, ok = _pick((live_edges & ~on).view(P, -1), gen)
    r = _takers(spec.add_connection, ok, gen)
    on_flat[r, edge[r]] = True
    w_flat[r, edge[r]] = (torch.rand(r.numel(), generator=gen, device=dev) * 2 - 1) * wmax

    # delete connection
    edge, ok = _pick(on_flat, gen)
    r = _takers(spec.delete_connection, ok, gen)
    on_flat[r, edge[r]] = False

    # change connection: move one end of an enabled connection to a free slot, keeping its weight
    edge, ok = _pick(on_flat, gen)
    src, dst = edge // N, edge % N
    keep_src = _coin(0.5, P, gen, dev)
    free = live_edges & ~on
    ends = torch.where(keep_src[:, None], free[rows, src, :], free[rows, :, dst])  # (P, N) new dst or new src
    other, ok2 = _pick(ends, gen)
    moved = torch.where(keep_src, src * N + other, other * N + dst)
    r = _takers(spec.change_connection, ok & ok2, gen)
    old, new = edge[r], moved[r]
    w_flat[r, new] = w_flat[r, old]
    on_flat[r, old] = False
    on_flat[r, new] = True

    # add node: split an enabled connection a → b through a free hidden slot a < k < b
    vacant = hidden & ~alive
    cum = vacant.view(torch.uint8).cumsum(dim=1, dtype=torch.int32)  # vacant slots in [0, j]
    before = cum - vacant.view(torch.uint8)  # vacant slots in [0, j)
    edge, ok = _pick((on & (before[:, None, :] > cum[:, :, None])).view(P, -1), gen)  # some vacancy strictly between
    a, b = edge // N, edge % N
    k, ok2 = _pick(vacant & (slot[None] > a[:, None]) & (slot[None] < b[:, None]), gen)
    r = _takers(spec.add_node, ok & ok2, gen)
    a, b, k = a[r], b[r], k[r]
    w[r, k, b] = w[r, a, b]
    w[r, a, k] = 1.0
    on[r, a, b] = False
    on[r, a, k] = True
    on[r, k, b] = True
    alive[r, k] = True
    act[r, k] = torch.randint(len(_FUNCS), (r.numel(),), generator=gen, device=dev)

    # delete node (its connections go with the clean-up below)
    k, ok = _pick(alive & hidden, gen)
    r = _takers(spec.delete_node, ok, gen)
    alive[r, k[r]] = False

    on &= allowed & alive[:, :, None] & alive[:, None, :]
    return {"w": w * _mask(on, w), "on": on, "act": act, "alive": alive}


def describe(genomes: dict[str, torch.Tensor], spec: CPPNSpec) -> dict[str, float]:
    """Mean hidden nodes and enabled connections per genome (for logs)."""
    hidden = genomes["alive"].sum(1).float() - NUM_INPUTS - spec.outputs
    return {"hidden_nodes": float(hidden.mean()), "connections": float(genomes["on"].sum((1, 2)).float().mean())}
