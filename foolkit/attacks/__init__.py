"""foolkit.attacks: minimal-noise and budget adversarial attacks, batched, on the model's device.

Public API
----------
``make_attack(name, **hyperparameters) -> Attack``
    Build an attack by name (see ``ATTACKS`` / :func:`available_attacks`); hyperparameters are
    keyword-only, unknown ones raise :class:`~foolkit.errors.FoolkitError`.
``attack(model, x, y=None, *, target=None) -> AttackResult``
    ``model``: a :class:`~foolkit.models.Classifier` (images in its bounds → logits);
    ``x``: ``(B, C, H, W)`` float in bounds; ``y``: ``(B,)`` true labels (default: the model's
    predictions); ``target``: ``None`` (untargeted), an int or ``(B,)`` class indices.
    The model is put in eval mode and restored; results live on the model's device.
``AttackResult``
    ``adv`` ``(B, C, H, W)``, ``success`` bool ``(B,)``, ``l1``/``l2``/``linf`` ``(B,)`` norms of
    ``adv − x``, ``labels_before``/``confidences_before``, ``labels_after``/``confidences_after``,
    ``target``, ``forwards``/``backwards`` (per-sample passes), ``seconds``; ``success_rate``,
    ``median(norm)``, ``summary()``, ``records(classes)``.

Attacks (name → class, main hyperparameters)
--------------------------------------------
budget attacks (``eps`` bounds the perturbation, the result is inside the ε-ball even after 8-bit quantisation):

- ``fgsm``  :class:`FGSM`  ``eps``, ``norm="linf"|"l2"`` (``steps`` accepted and ignored)
- ``bim``   :class:`BIM`   ``eps``, ``norm``, ``steps``, ``step_size``
- ``pgd``   :class:`PGD`   ``eps``, ``norm="linf"|"l2"``, ``steps``, ``step_size``, ``random_start``, ``restarts``, ``loss="ce"|"margin"``

minimum-norm attacks (find the smallest perturbation that fools; best-so-far tracking):

- ``lbfgs``    :class:`LBFGS`     Szegedy et al.'s box-constrained L-BFGS, search over c: ``steps``, ``search_steps``, ``initial_const``
- ``cw``       :class:`CarliniWagner` C&W L2, binary search over c: ``steps``, ``binary_search_steps``, ``initial_const``, ``lr``, ``confidence``
- ``deepfool`` :class:`DeepFool`  ``norm="l2"|"linf"``, ``steps``, ``overshoot``, ``candidates``
- ``ddn``      :class:`DDN`       ``steps``, ``init_epsilon``, ``gamma``, ``grid``
- ``fmn``      :class:`FMN`       ``norm="l1"|"l2"|"linf"``, ``steps``, ``alpha_init``, ``gamma_init``
- ``auto``     :class:`AutoMinNorm` the CLI default: DDN on the 8-bit grid (L2) or FMN (L1/L∞), a
               fallback attack on what is left, then a boundary search; ``norm``, ``steps``

Every attack takes ``quantize=True`` (the returned ``adv`` lies on the 8-bit grid and is still
adversarial there: it survives being saved as PNG) and ``seed`` (the only randomness source).

Example::

    from foolkit.attacks import make_attack
    adv = make_attack("pgd", eps=0.3, steps=10, norm="linf")(model, x, y).adv
    res = make_attack("fmn", norm="l2", steps=100)(model, x, y)
    res.success, res.l2, res.median("l2")
"""

from __future__ import annotations

from typing import Any

from foolkit.attacks.auto import AutoMinNorm
from foolkit.attacks.base import Attack, AttackResult, Problem, norm_of, project, to_grid
from foolkit.attacks.cw import CarliniWagner
from foolkit.attacks.ddn import DDN
from foolkit.attacks.deepfool import DeepFool
from foolkit.attacks.fgsm import FGSM
from foolkit.attacks.fmn import FMN
from foolkit.attacks.lbfgs import LBFGS
from foolkit.attacks.pgd import BIM, PGD
from foolkit.errors import FoolkitError

ATTACKS: dict[str, type[Attack]] = {
    "fgsm": FGSM, "bim": BIM, "pgd": PGD, "lbfgs": LBFGS, "cw": CarliniWagner, "deepfool": DeepFool, "ddn": DDN,
    "fmn": FMN, "auto": AutoMinNorm,
}


def available_attacks() -> list[str]:
    """Registered attack names."""
    return list(ATTACKS)


def make_attack(name: str, **hyperparameters: Any) -> Attack:
    """Build the attack called ``name`` with keyword ``hyperparameters``.

    ``None`` values are dropped (so CLI options left unset keep the attack's defaults).
    Raises :class:`FoolkitError` for an unknown name, an unknown hyperparameter or a bad value.
    """
    key = name.strip().lower().replace("_", "-")
    key = {"carlini-wagner": "cw", "c&w": "cw", "l-bfgs": "lbfgs", "min-norm": "auto"}.get(key, key)
    if key not in ATTACKS:
        raise FoolkitError(f"unknown attack {name!r}; choose from {', '.join(ATTACKS)}")
    cls = ATTACKS[key]
    kwargs = {k: v for k, v in hyperparameters.items() if v is not None}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise FoolkitError(f"attack {key}: {exc}".replace(f"{cls.__name__}.__init__() ", "")) from exc
    except FoolkitError as exc:  # a bad value: say which attack it was for
        raise FoolkitError(f"attack {key}: {exc}") from exc


__all__ = ["ATTACKS", "Attack", "AttackResult", "Problem", "available_attacks", "make_attack", "norm_of", "project",
           "to_grid", "FGSM", "BIM", "PGD", "LBFGS", "CarliniWagner", "DeepFool", "DDN", "FMN", "AutoMinNorm"]
