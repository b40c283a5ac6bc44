"""k-means++ seeding and Lloyd's k-means on a torch device (the GPU engine's initialisation).

The same algorithms as :func:`gaussmix._init.kmeans_plusplus` and :func:`gaussmix._init.kmeans`
(greedy k-means++ of Arthur & Vassilvitskii 2007 with ``2 + log K`` local trials; Lloyd
iterations stopped when the centres move less than ``tol`` times the mean feature variance),
written with torch operations so that a sample of rows already on the GPU is clustered there
instead of being copied to the host. Random draws come from a ``torch.Generator``, so the
seeds differ from the host code's: the results are equally good partitions, not the same ones.

Distances are computed as ``|x|² - 2 x·c + |c|²`` by one matrix product per block of rows,
in float64 for float64 rows and float32 otherwise (clamped at zero: the expansion can round
below it).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from gaussmix._covariance import CovarianceModel
from gaussmix._params import MixtureParams
from gaussmix._stats import SuffStats, m_step

__all__ = [
    "DEVICE_INIT_METHODS",
    "inertia",
    "initial_params",
    "kmeans",
    "kmeans_plusplus",
    "label_stats",
]

#: the estimator's ``init_params`` values this module computes on the device
DEVICE_INIT_METHODS = ("kmeans", "k-means++")

# rows per block of the (rows, K) distance matrix: 2**26 elements (256 MiB float32)
_BLOCK_ELEMENTS = 1 << 26


def _check(X: torch.Tensor, n_clusters: int, sample_weight: torch.Tensor | None) -> None:
    if X.ndim != 2 or X.shape[0] < 1:
        raise ValueError(f"X must be a non-empty 2-D tensor, got shape {tuple(X.shape)}")
    if not X.dtype.is_floating_point:
        raise TypeError(f"X must hold floating-point numbers, got {X.dtype}")
    if not 1 <= n_clusters <= X.shape[0]:
        raise ValueError(f"n_clusters must be in [1, {X.shape[0]}] (the rows), got {n_clusters}")
    if sample_weight is not None:
        if sample_weight.shape != (X.shape[0],):
            raise ValueError(
                f"sample_weight must have shape ({X.shape[0]},), got {tuple(sample_weight.shape)}"
            )
        if bool((sample_weight < 0).any()) or not float(sample_weight.sum()) > 0:
            raise ValueError("sample_weight must be non-negative with a positive sum")


def _sq_distances(X: torch.Tensor, x_sq: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """Squared distances (rows, centres) from ``|x|²`` and one matrix product."""
    d2 = x_sq[:, None] - 2.0 * (X @ C.T) + (C * C).sum(1)[None, :]
    return d2.clamp_min_(0.0)


def _nearest(X: torch.Tensor, x_sq: torch.Tensor, C: torch.Tensor):
    """Index of and squared distance to each row's nearest centre, block by block."""
    n = X.shape[0]
    step = max(1, _BLOCK_ELEMENTS // max(C.shape[0], 1))
    labels = torch.empty(n, dtype=torch.long, device=X.device)
    best = torch.empty(n, dtype=X.dtype, device=X.device)
    for s in range(0, n, step):
        d2 = _sq_distances(X[s : s + step], x_sq[s : s + step], C)
        best[s : s + step], labels[s : s + step] = d2.min(1)
    return labels, best


def kmeans_plusplus(
    X: torch.Tensor,
    n_clusters: int,
    *,
    sample_weight: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    n_local_trials: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy k-means++ seeding on the device, weighted.

    Parameters
    ----------
    X : Tensor of shape (n_samples, n_features)
    n_clusters : int
    sample_weight : Tensor of shape (n_samples,), optional
        Non-negative, positive sum.
    generator : torch.Generator, optional
        On ``X``'s device; draws the first centre and the candidates.
    n_local_trials : int, optional
        Candidates per step (default ``2 + int(log K)``).

    Returns
    -------
    centers : Tensor of shape (n_clusters, n_features)
    indices : Tensor of shape (n_clusters,)
        Rows chosen as centres.
    """
    _check(X, n_clusters, sample_weight)
    n = X.shape[0]
    trials = n_local_trials if n_local_trials is not None else 2 + int(math.log(n_clusters))
    w = (
        torch.ones(n, dtype=X.dtype, device=X.device)
        if sample_weight is None
        else sample_weight.to(X.dtype)
    )
    x_sq = (X * X).sum(1)
    indices = torch.empty(n_clusters, dtype=torch.long, device=X.device)
    first = torch.multinomial(w, 1, generator=generator)
    indices[0] = first[0]
    closest = _sq_distances(X, x_sq, X[first]).squeeze(1)
    for c in range(1, n_clusters):
        weights = w * closest
        if not float(weights.sum()) > 0:
            # every weighted row sits on a centre already: any row will do
            weights = w
        candidates = torch.multinomial(weights, trials, replacement=True, generator=generator)
        # potential after adding each candidate; keep the one that lowers it most
        d2 = _sq_distances(X, x_sq, X[candidates])  # (n, trials)
        new_closest = torch.minimum(closest[:, None], d2)
        potential = (w[:, None] * new_closest).sum(0)
        best = int(torch.argmin(potential))
        indices[c] = candidates[best]
        closest = new_closest[:, best].contiguous()
    return X[indices].clone(), indices


def kmeans(
    X: torch.Tensor,
    n_clusters: int,
    *,
    sample_weight: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    max_iter: int = 300,
    tol: float = 1e-4,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Lloyd's k-means from a k-means++ seeding, on the device, weighted.

    Parameters
    ----------
    X : Tensor of shape (n_samples, n_features)
    n_clusters : int
    sample_weight : Tensor of shape (n_samples,), optional
    generator : torch.Generator, optional
    max_iter : int, default=300
    tol : float, default=1e-4
        Stop when the centres move (squared, summed) less than ``tol`` times the mean
        feature variance, scikit-learn's convention.

    Returns
    -------
    labels : Tensor of shape (n_samples,)
    centers : Tensor of shape (n_clusters, n_features)
    n_iter : int
        Lloyd iterations run.
    """
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    centers, _ = kmeans_plusplus(X, n_clusters, sample_weight=sample_weight, generator=generator)
    n, d = X.shape
    w = (
        torch.ones(n, dtype=X.dtype, device=X.device)
        if sample_weight is None
        else sample_weight.to(X.dtype)
    )
    # tolerance in the data's scale, from a float64 variance (float32 sums lose digits at 1e7)
    mean = (w.double()[:, None] * X.double()).sum(0) / w.double().sum()
    var = (w.double()[:, None] * (X.double() - mean) ** 2).sum(0) / w.double().sum()
    threshold = tol * float(var.mean())
    x_sq = (X * X).sum(1)
    n_iter = 0
    labels = torch.zeros(n, dtype=torch.long, device=X.device)
    for n_iter in range(1, max_iter + 1):  # noqa: B007 - n_iter is returned
        labels, _ = _nearest(X, x_sq, centers)
        mass = torch.zeros(n_clusters, dtype=torch.float64, device=X.device)
        mass.index_add_(0, labels, w.double())
        sums = torch.zeros(n_clusters, d, dtype=torch.float64, device=X.device)
        sums.index_add_(0, labels, w.double()[:, None] * X.double())
        # an emptied cluster keeps its centre (it may win rows back next iteration)
        new = torch.where(mass[:, None] > 0, sums / mass.clamp_min(1e-300)[:, None], centers)
        new = new.to(X.dtype)
        shift = float(((new.double() - centers.double()) ** 2).sum())
        centers = new
        if shift <= threshold:
            break
    labels, _ = _nearest(X, x_sq, centers)
    return labels, centers, n_iter


def inertia(X: torch.Tensor, labels: torch.Tensor, n_clusters: int) -> float:
    """Sum of squared distances of the rows to their cluster's mean (float64), for comparing
    partitions found by different codes."""
    labels = labels.to(X.device)
    Xd = X.double()
    mass = torch.zeros(n_clusters, dtype=torch.float64, device=X.device)
    mass.index_add_(0, labels, torch.ones_like(Xd[:, 0]))
    sums = torch.zeros(n_clusters, X.shape[1], dtype=torch.float64, device=X.device)
    sums.index_add_(0, labels, Xd)
    means = sums / mass.clamp_min(1.0)[:, None]
    return float(((Xd - means[labels]) ** 2).sum())


def label_stats(
    X: torch.Tensor,
    sample_weight: torch.Tensor | None,
    labels: torch.Tensor,
    n_components: int,
    moment: str,
) -> SuffStats:
    """Sufficient statistics of a hard partition, on the device, summed in float64.

    The shift is the weighted mean of all rows (as the host code's ``_from_labels``), so the
    M-step that follows sees the same numbers up to the order of float64 additions.
    """
    n, d = X.shape
    Xd = X.double()
    w = torch.ones(n, dtype=torch.float64, device=X.device)
    if sample_weight is not None:
        w = sample_weight.to(X.device, torch.float64)
    centre = (w @ Xd) / w.sum()
    diff = Xd - centre
    nk = torch.zeros(n_components, dtype=torch.float64, device=X.device)
    nk.index_add_(0, labels, w)
    sx = torch.zeros(n_components, d, dtype=torch.float64, device=X.device)
    sx.index_add_(0, labels, w[:, None] * diff)
    if moment == "full":
        # one product per component over its own rows: no (rows, d, d) temporary
        sxx = torch.zeros(n_components, d, d, dtype=torch.float64, device=X.device)
        order = torch.argsort(labels)
        counts = torch.bincount(labels, minlength=n_components).tolist()
        start = 0
        for k, count in enumerate(counts):
            rows = order[start : start + count]
            start += count
            if count:
                dk = diff[rows]
                sxx[k] = (dk * w[rows, None]).T @ dk
    else:
        sxx = torch.zeros(n_components, d, dtype=torch.float64, device=X.device)
        sxx.index_add_(0, labels, w[:, None] * diff * diff)
    shift = centre.expand(n_components, d).cpu().numpy().copy()
    return SuffStats(
        shift,
        nk.cpu().numpy(),
        sx.cpu().numpy(),
        sxx.cpu().numpy(),
        0.0,
        float(w.sum()),
        n,
    )


def initial_params(
    method: str,
    X: torch.Tensor,
    sample_weight: torch.Tensor | None,
    n_components: int,
    model: CovarianceModel,
    reg_covar: float,
    random_state: np.random.RandomState,
) -> MixtureParams:
    """Starting parameters from k-means or k-means++ computed on ``X``'s device.

    Parameters
    ----------
    method : {"kmeans", "k-means++"}
        ``"kmeans"``: Lloyd's k-means, then one M-step on its partition; ``"k-means++"``:
        the seeds as means with ``reg_covar`` covariances (the host code's conventions).
    X : Tensor of shape (n_samples, n_features)
        Rows on the device (a sample of the data, typically).
    sample_weight : Tensor of shape (n_samples,) or None
    n_components : int
    model : CovarianceModel
    reg_covar : float
    random_state : numpy.random.RandomState
        Seeds the device generator (one draw), so fits stay reproducible.

    Returns
    -------
    params : MixtureParams
    """
    if method not in DEVICE_INIT_METHODS:
        raise ValueError(f"device initialisation takes {DEVICE_INIT_METHODS}, got {method!r}")
    generator = torch.Generator(device=X.device)
    generator.manual_seed(int(random_state.randint(0, 2**31 - 1)))
    if method == "kmeans":
        labels, _, _ = kmeans(X, n_components, sample_weight=sample_weight, generator=generator)
        stats = label_stats(X, sample_weight, labels, n_components, model.moment)
    else:
        _, idx = kmeans_plusplus(
            X, n_components, sample_weight=sample_weight, generator=generator
        )
        # one-hot responsibilities on the K chosen rows: their means, reg_covar covariances
        labels = torch.arange(n_components, device=X.device)
        stats = label_stats(X[idx], None, labels, n_components, model.moment)
    return m_step(stats, model, reg_covar)
