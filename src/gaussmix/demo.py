"""The embedded demonstration: the lecture's generative story, then EM recovering it."""

from __future__ import annotations

import numpy as np

from gaussmix.estimator import GaussianMixture

__all__ = ["TRUE_MIXTURE", "demo_data", "recovered_vs_true"]

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


def recovered_vs_true(model: GaussianMixture) -> list[dict]:
    """Match fitted components to the true ones (nearest mean) and list both side by side.

    Parameters
    ----------
    model : GaussianMixture
        A 3-component full-covariance fit of :func:`demo_data`.

    Returns
    -------
    rows : list of dict
        One per true component: true and fitted weight, mean and covariance.
    """
    from scipy.optimize import linear_sum_assignment

    true_means = TRUE_MIXTURE["means"]
    cost = ((true_means[:, None, :] - model.means_[None, :, :]) ** 2).sum(-1)
    _, match = linear_sum_assignment(cost)
    rows = []
    for k, j in enumerate(match):
        rows.append(
            {
                "component": k,
                "true_weight": float(TRUE_MIXTURE["weights"][k]),
                "fitted_weight": float(model.weights_[j]),
                "true_mean": TRUE_MIXTURE["means"][k].tolist(),
                "fitted_mean": model.means_[j].tolist(),
                "true_cov": TRUE_MIXTURE["covariances"][k].tolist(),
                "fitted_cov": model.covariances_[j].tolist(),
            }
        )
    return rows
