"""The embedded demonstration: the lecture's generative story, then EM recovering it.

``gaussmix demo`` runs :func:`run_demo`: draw a sample from a known mixture (fixed seed), choose
K and the covariance structure by BIC, compare recovered with true parameters, do the same on the
iris measurements scikit-learn ships (no download), and write one HTML report for both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gaussmix._covariance import get_model
from gaussmix.estimator import GaussianMixture

__all__ = [
    "DEMO_K_RANGE",
    "TRUE_MIXTURE",
    "DemoResult",
    "demo_data",
    "faithful_like",
    "iris_data",
    "recovered_vs_true",
    "run_demo",
]

#: K values the demo's BIC grid tries (with all four covariance types)
DEMO_K_RANGE = range(1, 7)

#: The known mixture the demo samples from (three 2-D components).
TRUE_MIXTURE = {
    "weights": np.array([0.5, 0.3, 0.2]),
    "means": np.array([[0.0, 0.0], [5.0, 5.0], [-4.0, 6.0]]),
    "covariances": np.array(
        [
            [[1.0, 0.3], [0.3, 0.5]],
            [[0.8, -0.4], [-0.4, 1.2]],
            [[0.4, 0.0], [0.0, 2.0]],
        ]
    ),
}


def demo_data(n_samples: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sample the known mixture: z ~ Categorical(φ), then x | z ~ N(μ_z, Σ_z).

    Parameters
    ----------
    n_samples : int, default=2000
    seed : int, default=0

    Returns
    -------
    X : ndarray of shape (n_samples, 2)
    z : ndarray of shape (n_samples,)
    """
    truth = GaussianMixture.from_parameters(**TRUE_MIXTURE, random_state=seed)
    return truth.sample(n_samples)


def faithful_like(n_samples: int = 272, seed: int = 1) -> np.ndarray:
    """A sample shaped like R's Old Faithful geyser data (no download): two clusters.

    Short eruptions (about 2 min, followed by about 54 min of waiting) and long ones (about
    4.3 min, 80 min), in proportions 35 % / 65 %, with the mild positive within-cluster
    correlation of the real data.

    Parameters
    ----------
    n_samples : int, default=272
        The real data set's size.
    seed : int, default=1

    Returns
    -------
    X : ndarray of shape (n_samples, 2)
        Columns: eruption duration (minutes), waiting time to the next eruption (minutes).
    """
    truth = GaussianMixture.from_parameters(
        [0.35, 0.65],
        [[2.04, 54.5], [4.29, 80.0]],
        [[[0.07, 0.45], [0.45, 34.0]], [[0.17, 0.94], [0.94, 36.0]]],
        random_state=seed,
    )
    X, _ = truth.sample(n_samples)
    # the real data are recorded to 1/1000 min and whole minutes
    return np.column_stack([np.round(X[:, 0], 3), np.round(X[:, 1])])


def iris_data() -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """The iris measurements bundled with scikit-learn (read from its package, no download).

    Returns
    -------
    X : ndarray of shape (150, 4)
    species : ndarray of shape (150,)
        Species index of each row.
    feature_names : list of str
    species_names : list of str
    """
    from sklearn.datasets import load_iris

    iris = load_iris()
    names = [n.replace(" (cm)", "").replace(" ", "_") for n in iris.feature_names]
    return iris.data, iris.target, names, list(iris.target_names)


def recovered_vs_true(model: GaussianMixture) -> list[dict]:
    """Match fitted components to the true ones (nearest means) and list both side by side.

    Parameters
    ----------
    model : GaussianMixture
        A fit of :func:`demo_data` (any K and covariance type; a true component with no
        fitted partner, when K < 3, gets None for its fitted values).

    Returns
    -------
    rows : list of dict
        One per true component: true and fitted weight, mean and (full) covariance, and the
        index of the fitted component matched to it.
    """
    from scipy.optimize import linear_sum_assignment

    true_means = TRUE_MIXTURE["means"]
    means = np.asarray(model.means_, dtype=np.float64)
    d = means.shape[1]
    cov_model = get_model(model.covariance_type)
    covariances = np.asarray(model.covariances_, dtype=np.float64)
    cost = ((true_means[:, None, :] - means[None, :, :]) ** 2).sum(-1)
    true_idx, fitted_idx = linear_sum_assignment(cost)
    partner = dict(zip(true_idx.tolist(), fitted_idx.tolist(), strict=True))
    rows = []
    for k in range(true_means.shape[0]):
        j = partner.get(k)
        rows.append(
            {
                "component": k,
                "fitted_component": j,
                "true_weight": float(TRUE_MIXTURE["weights"][k]),
                "fitted_weight": None if j is None else float(model.weights_[j]),
                "true_mean": TRUE_MIXTURE["means"][k].tolist(),
                "fitted_mean": None if j is None else means[j].tolist(),
                "true_cov": TRUE_MIXTURE["covariances"][k].tolist(),
                "fitted_cov": (
                    None if j is None else cov_model.full_matrix(covariances, j, d).tolist()
                ),
            }
        )
    return rows


def _write_data_files(out: Path, X, Xi, species, names) -> None:
    from gaussmix._io import atomic_output, write_csv

    write_csv(out / "mixture.csv", ["x0", "x1"], [X])
    write_csv(out / "faithful.csv", ["eruptions", "waiting"], [faithful_like()])
    _, _, _, species_names = iris_data()
    with atomic_output(out / "iris.csv") as fh:
        fh.write(",".join([*names, "species"]) + "\n")
        for row, s in zip(Xi, species, strict=True):
            fh.write(",".join(f"{v:g}" for v in row) + f",{species_names[s]}\n")


@dataclass
class DemoResult:
    """What :func:`run_demo` found and wrote.

    Attributes
    ----------
    X : ndarray of shape (n_samples, 2)
        The sample from :data:`TRUE_MIXTURE`.
    selection : SelectionResult
        The BIC grid on ``X``.
    comparison : list of dict
        :func:`recovered_vs_true` of the selected model.
    iris_selection : SelectionResult
        The BIC grid on iris.
    iris_ari : float
        Adjusted Rand index between the selected iris model's labels and the species.
    report : pathlib.Path or None
        The HTML report written.
    seconds : dict of str to float
        Wall time of each stage.
    """

    X: np.ndarray
    selection: Any
    comparison: list[dict]
    iris_selection: Any
    iris_ari: float
    report: Path | None
    seconds: dict[str, float] = field(default_factory=dict)


def run_demo(
    out_dir: str | Path | None,
    *,
    n_samples: int = 2000,
    seed: int = 0,
    n_jobs: int | None = None,
    on_cell=None,
) -> DemoResult:
    """Sample, select by BIC, compare with the truth; iris likewise; write the report.

    Besides ``report.html``, ``out_dir`` receives the data as CSV for trying the command
    line: ``mixture.csv`` (the sample), ``iris.csv`` (with its text ``species`` column) and
    ``faithful.csv`` (:func:`faithful_like`).

    Parameters
    ----------
    out_dir : str, path or None
        Folder for ``report.html`` (created if missing); None writes no report.
    n_samples : int, default=2000
    seed : int, default=0
        Seed of the sample and of every fit.
    n_jobs : int or None
        Worker processes for the grids (see :func:`gaussmix.selection.select`).
    on_cell : callable, optional
        Progress hook forwarded to :func:`gaussmix.selection.select`.

    Returns
    -------
    result : DemoResult
    """
    from sklearn.metrics import adjusted_rand_score

    from gaussmix.selection import COVARIANCE_TYPES, select

    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    X, _ = demo_data(n_samples, seed)
    selection = select(X, DEMO_K_RANGE, COVARIANCE_TYPES, "bic", n_jobs=n_jobs,
                       random_state=seed, on_cell=on_cell)  # fmt: skip
    comparison = recovered_vs_true(selection.best_model)
    seconds["demo_selection"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    Xi, species, names, _ = iris_data()
    iris_selection = select(Xi, DEMO_K_RANGE, COVARIANCE_TYPES, "bic", n_jobs=n_jobs,
                            random_state=seed, on_cell=on_cell)  # fmt: skip
    iris_ari = float(adjusted_rand_score(species, iris_selection.best_model.predict(Xi)))
    seconds["iris_selection"] = time.perf_counter() - t0
    report_path = None
    if out_dir is not None:
        from gaussmix.report import build_section, write_html

        t0 = time.perf_counter()
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        sections = [
            build_section(X, selection.best_model, selection=selection, feature_names=["x0", "x1"],
                          title=f"Known mixture: {n_samples} points from 3 Gaussians",
                          name="mixture"),
            build_section(Xi, iris_selection.best_model, selection=iris_selection,
                          feature_names=names, title="Iris (scikit-learn's bundled copy)",
                          name="iris"),
        ]  # fmt: skip
        _write_data_files(out, X, Xi, species, names)
        report_path = write_html(
            sections,
            out / "report.html",
            title="gaussmix demo",
            intro=(
                f"A sample of {n_samples} points from a known 3-component mixture (seed {seed}) "
                "and the 150 iris flowers, each modelled by the mixture that BIC selects over "
                f"K = {DEMO_K_RANGE.start}..{DEMO_K_RANGE.stop - 1} and four covariance types."
            ),
        )
        seconds["report"] = time.perf_counter() - t0
    return DemoResult(X, selection, comparison, iris_selection, iris_ari, report_path, seconds)
