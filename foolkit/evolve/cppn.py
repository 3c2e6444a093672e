"""CPPNs (compositional pattern-producing networks) as batched tensors, rendered in one pass.

A population of CPPNs is a dict of tensors with a leading population axis ``P``; node ``k`` of
every genome is slot ``k`` of a fixed-capacity, topologically ordered graph::

    slots:  0 x   1 y   2 d   3 bias  |  4 .. 4+H-1 hidden  |  outputs (1 gray, 3 HLS colour)
    "w"     (P, N, N) float  weight of connection src → dst (row src, column dst), in [-wmax, wmax]
    "on"    (P, N, N) bool   connection enabled (only src < dst, never out of an output / into an input)
    "act"   (P, N)    int64  activation of each node (index into ACTIVATIONS)
    "alive" (P, N)    bool   node exists (inputs and outputs always do)

Because connections only run from lower to higher slots, evaluating slots in order is a
topological sort for every genome at once: :func:`render` walks the N slots (a Python loop over
*nodes*, never over genomes or pixels) and each step is one batched matrix product over all
genomes and pixels. Inputs are the pixel's x, y, distance from the centre and a bias, all in
[-1, 1] (the original code fed raw pixel indices; REFERENCES.md), so a genome renders the same
picture at any resolution.

Mutations follow the paper's Sferes settings (REFERENCES.md): polynomial weight mutation
(p = 0.1, η = 15, weights in [-10, 10]), activation resampling (p = 0.1 per node), and per
genome add connection 0.5, delete connection 0.3, change connection 0.5, add node 0.5, delete
node 0.2. Each structural mutation is applied to every genome at once by scoring all candidate
edges / slots with random numbers and taking the argmax.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from foolkit.evolve.operators import polynomial_mutation

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
    for i, f in enumerate(_FUNCS):
        rows = (act == i).nonzero().flatten()  # each row is computed once, by its own function
        if rows.numel():
            out[rows] = f(z[rows])
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


def render(genomes: dict[str, torch.Tensor], spec: CPPNSpec, height: int, width: int) -> torch.Tensor:
    """Render every genome at ``height × width``: → ``(P, 1 or 3, H, W)`` in [0, 1].

    One pass over the node slots; each slot is a batched product over all genomes and pixels.
    Memory is ``P × (alive slots) × H × W`` floats; chunk the population to bound it.
    """
    w, on, act, alive = genomes["w"], genomes["on"], genomes["act"], genomes["alive"]
    P, N = act.shape
    device = w.device
    weff = torch.where(on & alive[:, :, None] & alive[:, None, :], w, torch.zeros_like(w))
    incoming = weff.transpose(1, 2).contiguous()  # (P, dst, src): row k holds node k's input weights
    coords = coordinates(height, width, device)  # (4, X)
    values = torch.zeros(P, N, height * width, device=device)
    values[:, :NUM_INPUTS] = coords
    used = alive.any(0).tolist()  # one host sync per call: skip slots no genome uses
    for k in range(NUM_INPUTS, N):
        if not used[k]:
            continue
        z = torch.bmm(incoming[:, k:k + 1, :k], values[:, :k]).squeeze(1)  # (P, X)
        values[:, k] = activate(z, act[:, k])
    out = (values[:, N - spec.outputs:] + 1.0) * 0.5  # (P, O, X) in [0, 1]
    out = out.clamp(0.0, 1.0).view(P, spec.outputs, height, width)
    if spec.outputs == 3:
        return hls_to_rgb(out[:, 0], out[:, 1], out[:, 2]).clamp(0.0, 1.0)
    return out


def _pick(candidates: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One uniformly random True position per row of ``candidates`` ``(P, M)`` bool →
    ``(index (P,), found (P,) bool)`` (index is arbitrary where nothing is found)."""
    scores = torch.rand(candidates.shape, generator=gen, device=candidates.device)
    scores = torch.where(candidates, scores, torch.full_like(scores, -1.0))
    return scores.argmax(dim=1), candidates.any(dim=1)


def _coin(p: float, n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device) < p


def _set(t: torch.Tensor, rows: torch.Tensor, i: torch.Tensor, j: torch.Tensor | None, value: torch.Tensor | float,
         where: torch.Tensor) -> None:
    """``t[r, i(, j)] = value`` for the rows where ``where`` holds (in place, no host sync)."""
    idx = (rows, i) if j is None else (rows, i, j)
    value = torch.as_tensor(value, dtype=t.dtype, device=t.device)
    t[idx] = torch.where(where, value, t[idx])


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
    allowed = spec.allowed(dev)
    inputs, hidden, _ = spec.kinds(dev)
    wmax = spec.weight_range

    # weights and activations
    w = polynomial_mutation(w, rate=spec.weight_rate * rate_scale, eta=spec.weight_eta, low=-wmax, up=wmax, gen=gen,
                            mask=on)
    resample = (torch.rand((P, N), generator=gen, device=dev) < spec.activation_rate * rate_scale) & alive & ~inputs
    act = torch.where(resample, torch.randint(len(_FUNCS), (P, N), generator=gen, device=dev), act)

    def free_edges() -> torch.Tensor:
        return allowed & ~on & alive[:, :, None] & alive[:, None, :]

    def new_weight() -> torch.Tensor:
        return (torch.rand(P, generator=gen, device=dev) * 2 - 1) * wmax

    # add connection
    flat, ok = _pick(free_edges().view(P, -1), gen)
    do = _coin(spec.add_connection, P, gen, dev) & ok
    src, dst = flat // N, flat % N
    _set(on, rows, src, dst, True, do)
    _set(w, rows, src, dst, new_weight(), do)

    # delete connection
    flat, ok = _pick(on.view(P, -1), gen)
    do = _coin(spec.delete_connection, P, gen, dev) & ok
    _set(on, rows, flat // N, flat % N, False, do)

    # change connection: move one end of an enabled connection, keeping its weight
    flat, ok = _pick(on.view(P, -1), gen)
    src, dst = flat // N, flat % N
    keep_src = _coin(0.5, P, gen, dev)
    same_end = torch.where(keep_src[:, None, None], slot[None, :, None] == src[:, None, None],
                           slot[None, None, :] == dst[:, None, None])
    flat2, ok2 = _pick((free_edges() & same_end).view(P, -1), gen)
    do = _coin(spec.change_connection, P, gen, dev) & ok & ok2
    weight = w[rows, src, dst]
    _set(on, rows, src, dst, False, do)
    _set(on, rows, flat2 // N, flat2 % N, True, do)
    _set(w, rows, flat2 // N, flat2 % N, weight, do)

    # add node: split an enabled connection a → b through a free hidden slot a < k < b
    free = hidden & ~alive
    cum = free.long().cumsum(dim=1)  # free slots in [0, j]
    before = torch.cat([torch.zeros(P, 1, dtype=cum.dtype, device=dev), cum[:, :-1]], dim=1)  # in [0, j)
    between = before[:, None, :] - cum[:, :, None]  # free slots strictly between a and b
    flat, ok = _pick((on & (between > 0)).view(P, -1), gen)
    a, b = flat // N, flat % N
    k, ok2 = _pick(free & (slot[None] > a[:, None]) & (slot[None] < b[:, None]), gen)
    do = _coin(spec.add_node, P, gen, dev) & ok & ok2
    weight = w[rows, a, b]
    _set(on, rows, a, b, False, do)
    _set(on, rows, a, k, True, do)
    _set(w, rows, a, k, 1.0, do)
    _set(on, rows, k, b, True, do)
    _set(w, rows, k, b, weight, do)
    _set(alive, rows, k, None, True, do)
    _set(act, rows, k, None, torch.randint(len(_FUNCS), (P,), generator=gen, device=dev), do)

    # delete node
    k, ok = _pick(alive & hidden, gen)
    do = _coin(spec.delete_node, P, gen, dev) & ok
    _set(alive, rows, k, None, False, do)
    touches = (slot[None, :, None] == k[:, None, None]) | (slot[None, None, :] == k[:, None, None])
    on &= ~(do[:, None, None] & touches)

    on &= allowed & alive[:, :, None] & alive[:, None, :]
    return {"w": torch.where(on, w, torch.zeros_like(w)), "on": on, "act": act, "alive": alive}


def describe(genomes: dict[str, torch.Tensor], spec: CPPNSpec) -> dict[str, float]:
    """Mean hidden nodes and enabled connections per genome (for logs)."""
    hidden = genomes["alive"].sum(1).float() - NUM_INPUTS - spec.outputs
    return {"hidden_nodes": float(hidden.mean()), "connections": float(genomes["on"].sum((1, 2)).float().mean())}
