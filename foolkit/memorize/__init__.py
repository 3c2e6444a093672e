"""Memorisation experiments of Zhang et al. 2017, "Understanding deep learning requires
rethinking generalization": the same networks that generalise fit random labels perfectly.

Plain functions for in-process use (e.g. ``foolkit demo``):

``run_randomization(dataset="mnist", subset=1000, model="mlp1x512", variants=("true", "random-labels"), epochs=100, out=DIR)``
    → ``(runs, figures)``: one record per data variant (``variant``, ``corruption``, ``model``,
    ``train_accuracy``, ``test_accuracy``, ``epochs_to_fit``, ``steps_to_fit``, ``seconds``,
    ``history``, ...) and, with ``out``, the paths of figure 1 (a)–(c) as PNGs
    (``{"loss", "time_to_fit", "test_error"}``). On 1,000 MNIST digits with ``mlp1x512`` both
    variants fit in about half a minute on two CPU cores: random labels reach 100% training
    accuracy with test accuracy near chance (≈10%), true labels ≈90% test.
``fit_expressivity(z, y)`` → ``(network, report)``: Theorem 1's depth-2 ReLU network with
    2n + d weights that fits targets ``y (n,)`` on points ``z (n, …)`` in float64;
    ``report.max_abs_error`` (≈1e-7 at n = 10,000, d = 784), ``report.parameters``,
    ``report.smallest_eigenvalue``, ``report.seconds``. ``random_problem(n, d)`` makes data.
``run_regularizers(...)`` → Table-1-like rows + Markdown + figure.
``run_minnorm(dataset=..., subset=2000, kernel="polynomial")`` → the min-norm interpolant's
    ``train_error`` (0), ``test_error``, ``norm``; ``sgd_check`` compares it with SGD from zero.
``make_variant(spec, x_train, y_train, x_test, y_test, num_classes=, seed=)`` → one data variant.
"""

from foolkit.memorize.experiments import (DEFAULT_VARIANTS, MODELS, REGULARIZERS, RunSettings, fit_ratio,
                                          plot_figure1, run_randomization, run_regularizers, summarize,
                                          train_variant)
from foolkit.memorize.expressivity import (ExpressivityReport, TwoLayerReLU, fit_expressivity, memorize_dataset,
                                           random_problem)
from foolkit.memorize.minnorm import KernelSpec, fit_minnorm, run_minnorm, sgd_check
from foolkit.memorize.randomize import Variant, corrupt_labels, make_variant, parse_variant

__all__ = [
    "DEFAULT_VARIANTS", "MODELS", "REGULARIZERS", "RunSettings", "fit_ratio", "plot_figure1", "run_randomization",
    "run_regularizers", "summarize", "train_variant", "ExpressivityReport", "TwoLayerReLU", "fit_expressivity",
    "memorize_dataset", "random_problem", "KernelSpec", "fit_minnorm", "run_minnorm", "sgd_check", "Variant",
    "corrupt_labels", "make_variant", "parse_variant",
]
