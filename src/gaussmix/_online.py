"""Online (stepwise) EM on sufficient statistics, after Cappé & Moulines (2009).

Batch EM alternates ``s = E-step(all rows)`` and ``θ = M-step(s)``. Online EM replaces the
full-data statistics by a running average over batches ``B_1, B_2, ...`` as they arrive::

    s_t = (1 - ρ_t) · s_{t-1} + ρ_t · stats(B_t; θ_{t-1}) / weight(B_t)
    θ_t = M-step(s_t)

``stats(B; θ)`` are the weighted sums ``(Σ w r, Σ w r (x - c), Σ w r (x - c)(x - c)ᵀ)`` of
:mod:`gaussmix._stats`; dividing by the batch weight makes every ``s_t`` a per-unit-weight
average, so batches of any size mix. The M-step is invariant to a common scale of the
statistics, so it runs on ``s_t`` directly.

Step sizes
----------
``ρ_t = (t + t0) ** (-κ)`` for the ``t``-th batch (``t = 0, 1, 2, ...``) with ``t0 = 1`` and
``κ = 0.6``. ``ρ_0 = 1``: the first batch replaces the (empty) running statistics. Cappé &
Moulines require ``Σ ρ_t = ∞`` and ``Σ ρ_t² < ∞``, that is ``κ ∈ (0.5, 1]``: ``κ = 1`` is the
plain running mean of all batch statistics (forgets the poor early ones slowest); ``κ``
near 0.5 forgets fastest and is noisiest. On a stationary stream ``θ_t`` converges to a
stationary point of the full-data likelihood, the fixed point of batch EM. The fluctuation
around it behaves like that of an exponentially weighted average with weight ``ρ_t``, i.e. of
a batch fit on about ``B (2 - ρ_t) / ρ_t`` rows for batches of ``B`` rows.

Centring
--------
The running statistics are kept around the current means (``shift``), so that the M-step's
``Σ r (x-c)(x-c)ᵀ - n δ δᵀ`` subtracts small numbers. After every M-step they are moved to the
new means with :func:`recentre`, which is exact: with ``δ = c_old - c_new``,
``x - c_new = (x - c_old) + δ``, hence

* ``sx'  = sx + n δ``
* ``sxx' = sxx + sx δᵀ + δ sxᵀ + n δ δᵀ`` (diagonal moment: ``sxx + 2 sx∘δ + n δ²``).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.utils import check_random_state
from sklearn.utils.validation import validate_data

from gaussmix._params import MixtureParams
from gaussmix._stats import SuffStats, e_step_chunk, m_step
from gaussmix._validation import check_sample_weight, check_scale, normalise_sample_weight

__all__ = ["KAPPA", "T0", "OnlineState", "online_step", "partial_fit", "recentre", "step_size"]

KAPPA = 0.6
T0 = 1.0


def step_size(t: int, *, kappa: float = KAPPA, t0: float = T0) -> float:
    """``ρ_t = (t + t0) ** (-kappa)``: the weight of batch ``t`` (0-based) in the average.

    Parameters
    ----------
    t : int
        Batch index, 0 for the first batch.
    kappa : float, default=0.6
        Decay exponent, in (0.5, 1].
    t0 : float, default=1.0
        Offset, >= 1 so that ``ρ_0 <= 1``.

    Returns
    -------
    rho : float
    """
    if not 0.5 < kappa <= 1.0:
        raise ValueError(f"kappa must be in (0.5, 1], got {kappa}")
    if t0 < 1.0:
        raise ValueError(f"t0 must be >= 1, got {t0}")
    return float((t + t0) ** (-kappa))


def recentre(stats: SuffStats, shift: NDArray) -> SuffStats:
    """The same statistics with their second moments taken around ``shift`` instead.

    Parameters
    ----------
    stats : SuffStats
        Statistics around ``stats.shift``.
    shift : ndarray of shape (n_components, n_features)
        New origin.

    Returns
    -------
    stats : SuffStats
        ``sx``, ``sxx`` and ``shift`` changed; counts and likelihood unchanged.
    """
    shift = np.asarray(shift, dtype=np.float64)
    delta = stats.shift - shift
    nk = stats.nk
    sx = stats.sx + nk[:, None] * delta
    if stats.sxx.ndim == 3:
        cross = stats.sx[:, :, None] * delta[:, None, :]
        sxx = (
            stats.sxx
            + cross
            + np.swapaxes(cross, 1, 2)
            + nk[:, None, None] * delta[:, :, None] * delta[:, None, :]
        )
    else:
        sxx = stats.sxx + 2.0 * stats.sx * delta + nk[:, None] * delta * delta
    return replace(stats, shift=shift.copy(), sx=sx, sxx=sxx)


def _scaled(stats: SuffStats, factor: float) -> SuffStats:
    return replace(
        stats,
        nk=stats.nk * factor,
        sx=stats.sx * factor,
        sxx=stats.sxx * factor,
        log_likelihood=stats.log_likelihood * factor,
        weight_sum=stats.weight_sum * factor,
    )


@dataclass(frozen=True)
class OnlineState:
    """Running statistics of online EM.

    Attributes
    ----------
    stats : SuffStats
        Per-unit-weight running averages around the current means (``weight_sum`` is 1).
    n_batches : int
        Batches folded in so far.
    means : ndarray of shape (n_components, n_features)
        The estimator's means after the last update: a later ``fit`` changes ``means_`` and
        so marks this state as stale.
    """

    stats: SuffStats
    n_batches: int
    means: NDArray


def online_step(
    state: OnlineState | None,
    params: MixtureParams,
    X: NDArray,
    sample_weight: NDArray | None,
    *,
    reg_covar: float,
    kappa: float = KAPPA,
    t0: float = T0,
) -> tuple[OnlineState, MixtureParams, float]:
    """Fold one batch into the running statistics and take an M-step.

    Parameters
    ----------
    state : OnlineState or None
        None starts a new average (the batch gets weight ``ρ_0 = 1``).
    params : MixtureParams
        Current parameters (the E-step's).
    X : ndarray of shape (n_samples, n_features)
    sample_weight : ndarray of shape (n_samples,) or None
    reg_covar : float
    kappa, t0 : float
        Step-size schedule, see :func:`step_size`.

    Returns
    -------
    state : OnlineState
    params : MixtureParams
        After the M-step.
    lower_bound : float
        Mean log-likelihood of the batch under the incoming ``params``.
    """
    batch = e_step_chunk(X, sample_weight, params, params.means)
    if not batch.weight_sum > 0:
        raise ValueError("the batch's sample weights sum to zero: nothing to learn from")
    lower_bound = batch.mean_log_likelihood
    if not np.isfinite(lower_bound):
        raise FloatingPointError(
            "the log-likelihood of the batch is not finite; rescale the data or increase reg_covar"
        )
    batch = _scaled(batch, 1.0 / batch.weight_sum)
    t = 0 if state is None else state.n_batches
    rho = step_size(t, kappa=kappa, t0=t0)
    if state is None:
        running = batch
    else:
        # the previous M-step re-centred the running statistics on params.means already
        previous = state.stats
        running = SuffStats(
            batch.shift,
            (1 - rho) * previous.nk + rho * batch.nk,
            (1 - rho) * previous.sx + rho * batch.sx,
            (1 - rho) * previous.sxx + rho * batch.sxx,
            (1 - rho) * previous.log_likelihood + rho * batch.log_likelihood,
            1.0,
            previous.n_samples + batch.n_samples,
        )
    new_params = m_step(running, params.model, reg_covar, params)
    running = recentre(running, new_params.means)
    return OnlineState(running, t + 1, new_params.means.copy()), new_params, lower_bound


_FLOATS = [np.float64, np.float32]


def partial_fit(estimator: Any, X: Any, sample_weight: Any = None) -> Any:
    """One online-EM update of ``estimator`` (a GaussianMixture) from the batch ``X``.

    The first call (or the first after a ``fit``) initialises from the batch (``init_params``
    on it, or the user's ``*_init``) unless the estimator is already fitted, in which case it
    starts from the fitted parameters. See the module docstring for the update.
    """
    model = estimator._check_parameters()
    if isinstance(X, (str, bytes, os.PathLike)):
        raise TypeError(
            f"partial_fit takes one batch of rows in memory (an array or a DataFrame), not a "
            f"file name ({X!r}): read the batch first, or fit the whole file with fit(path)"
        )
    state: OnlineState | None = getattr(estimator, "_online_state", None)
    fitted = hasattr(estimator, "means_")
    if state is not None and not (fitted and np.array_equal(state.means, estimator.means_)):
        state = None  # fit() ran since: start a new average from its parameters
    X = validate_data(
        estimator, X, dtype=_FLOATS, reset=not fitted, ensure_all_finite="allow-nan"
    )
    if fitted:
        dtype = estimator.means_.dtype
    else:
        dtype = np.dtype(estimator._working_dtype(X.dtype))
    X = X.astype(dtype, copy=False)
    check_scale(X)
    w = check_sample_weight(sample_weight, X.shape[0])
    if X.size and np.isnan(np.min(X)):
        # missing values: rows with nothing observed are left out; the first batch starts
        # every feature, so each needs an observed value there
        from gaussmix._missing import drop_unobserved

        names = getattr(estimator, "feature_names_in_", None)
        X, w, n_empty = drop_unobserved(X, w, names, every_feature=not fitted)
        if X.shape[0] == 0:
            # one error, not a warning about the rows left out followed by it
            raise ValueError("every row of the batch is NaN: nothing to learn from")
        if n_empty:
            warnings.warn(
                f"{n_empty} rows of the batch have no observed value (all NaN): they are "
                "left out",
                UserWarning,
                stacklevel=4,
            )
    if w is not None:
        positive = int(np.count_nonzero(w))
        if positive == 0:
            raise ValueError("the batch's sample weights sum to zero: nothing to learn from")
        if not fitted and positive < estimator.n_components:
            raise ValueError(
                f"the first batch initialises the mixture and needs n_components = "
                f"{estimator.n_components} rows of positive weight, got {positive}"
            )
        # only ratios matter (the batch's statistics are divided by its weight): on their own
        # scale weights of 1e300 would overflow the moments
        w = normalise_sample_weight(w)
    if fitted:
        params = estimator._fitted_params()
    else:
        if X.shape[0] < estimator.n_components:
            raise ValueError(
                f"the first batch initialises the mixture and needs n_samples >= "
                f"n_components = {estimator.n_components}, got {X.shape[0]} rows"
            )
        from gaussmix.backends.numpy import NumpyExecutor

        rng = check_random_state(estimator.random_state)
        user = estimator._user_init(model, X.shape[1])
        params = estimator._initial_params(NumpyExecutor(X, w), model, user, rng)
    state, params, lower_bound = online_step(
        state, params, X, w, reg_covar=float(estimator.reg_covar)
    )
    estimator._set_fitted(params, dtype)
    state = replace(state, means=estimator.means_.copy())
    estimator._online_state = state
    estimator.n_iter_ = state.n_batches
    estimator.converged_ = False
    estimator.lower_bound_ = float(lower_bound)
    previous = list(getattr(estimator, "lower_bounds_", [])) if state.n_batches > 1 else []
    estimator.lower_bounds_ = [*previous, float(lower_bound)]
    return estimator
