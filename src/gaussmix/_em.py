"""The EM driver: E-step through an executor, M-step on summed statistics, restarts.

Nothing here prints or knows where the data lives; progress goes to an optional callback.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import numpy as np

from gaussmix._covariance import CovarianceModel
from gaussmix._params import MixtureParams
from gaussmix._stats import m_step
from gaussmix.backends import Executor

__all__ = ["EMProgress", "EMResult", "best_of", "run_em"]

# K·d² below which the M-step's matrices are too small for BLAS to wake its threads, so
# holding it to one (~15-400 µs through threadpoolctl) would cost more than the M-step itself
_BLAS_LIMIT_WORK = 4096
_blas = None  # threadpoolctl controller of the loaded BLAS libraries, made on first use


def _one_blas_thread() -> AbstractContextManager:
    """Hold BLAS to one thread for the M-step's K small factorisations.

    Threads gain nothing on d × d matrices, and once woken, BLAS threads keep spinning into
    the next E-step and take the cores from its own threads (measured on W2 tied: 94 -> 55 ms
    per iteration). The controller is made once; entering it costs ~15 µs.
    """
    global _blas
    if _blas is None:
        try:
            from threadpoolctl import ThreadpoolController

            _blas = ThreadpoolController().select(user_api="blas")
        except ImportError:  # pragma: no cover - scikit-learn requires threadpoolctl
            _blas = False
    return _blas.limit(limits=1) if _blas else nullcontext()


@dataclass(frozen=True)
class EMProgress:
    """What a callback hears after each iteration.

    Attributes
    ----------
    init : int
        Restart index (0-based).
    iteration : int
        Iteration number (1-based).
    lower_bound : float
        Mean log-likelihood per sample at the parameters of this iteration's E-step.
    change : float
        Difference to the previous iteration's lower bound (inf at the first).
    """

    init: int
    iteration: int
    lower_bound: float
    change: float


@dataclass
class EMResult:
    """Outcome of one EM run.

    Attributes
    ----------
    params : MixtureParams
        Parameters after the last M-step.
    lower_bound : float
        Mean log-likelihood of the last E-step (scikit-learn's ``lower_bound_``).
    lower_bounds : list of float
        Lower bound of every iteration.
    n_iter : int
        Iterations run.
    converged : bool
        Whether ``|change| < tol`` was reached.
    """

    params: MixtureParams
    lower_bound: float = -np.inf
    lower_bounds: list[float] = field(default_factory=list)
    n_iter: int = 0
    converged: bool = False


def run_em(
    executor: Executor,
    params: MixtureParams,
    *,
    reg_covar: float,
    tol: float,
    max_iter: int,
    callback: Callable[[EMProgress], None] | None = None,
    init_index: int = 0,
    start_lower_bound: float = -np.inf,
    model: CovarianceModel | None = None,
) -> EMResult:
    """Iterate E and M steps from ``params`` until the lower bound changes by less than ``tol``.

    Parameters
    ----------
    executor : Executor
        Data source.
    params : MixtureParams
        Starting parameters.
    reg_covar : float
        Non-negative diagonal regularisation.
    tol : float
        Convergence threshold on the change of the mean log-likelihood.
    max_iter : int
        Maximum number of iterations.
    callback : callable, optional
        Called with an :class:`EMProgress` after every iteration.
    init_index : int, default=0
        Passed through to the callback.
    start_lower_bound : float, default=-inf
        Lower bound before the first iteration (a warm start passes the previous fit's).
    model : CovarianceModel, optional
        Covariance model of the M-steps (default ``params.model``): a start given as full
        matrices runs its first E-step as given, and the constraint holds from the first
        M-step on.

    Returns
    -------
    result : EMResult
    """
    result = EMResult(params=params, lower_bound=start_lower_bound)
    model = params.model if model is None else model
    for n_iter in range(1, max_iter + 1):
        stats = executor.e_step(result.params)
        previous = result.lower_bound
        lower_bound = stats.mean_log_likelihood
        if not np.isfinite(lower_bound):
            raise FloatingPointError(
                "the log-likelihood became non-finite during EM; rescale the data or "
                "increase reg_covar"
            )
        # the E-step's parameters warm-start iterative M-steps (VEI, EVE, ...)
        if stats.sx.size * stats.sx.shape[1] >= _BLAS_LIMIT_WORK:
            with _one_blas_thread():
                result.params = m_step(stats, model, reg_covar, result.params)
        else:
            result.params = m_step(stats, model, reg_covar, result.params)
        result.lower_bound = lower_bound
        result.lower_bounds.append(lower_bound)
        result.n_iter = n_iter
        change = lower_bound - previous
        if callback is not None:
            callback(EMProgress(init_index, n_iter, lower_bound, change))
        if abs(change) < tol:
            result.converged = True
            break
    return result


def best_of(
    executor: Executor,
    starts: Callable[[int], MixtureParams],
    n_init: int,
    *,
    reg_covar: float,
    tol: float,
    max_iter: int,
    callback: Callable[[EMProgress], None] | None = None,
    start_lower_bound: float = -np.inf,
    model: CovarianceModel | None = None,
) -> EMResult:
    """Run EM from ``n_init`` starting points and keep the best final lower bound.

    Parameters
    ----------
    executor : Executor
    starts : callable
        ``starts(i)`` returns the starting parameters of restart ``i``.
    n_init : int
    reg_covar, tol, max_iter, callback, start_lower_bound, model
        As in :func:`run_em`.

    Returns
    -------
    result : EMResult
        The run with the highest lower bound (the first on ties).
    """
    best: EMResult | None = None
    for i in range(n_init):
        result = run_em(
            executor,
            starts(i),
            reg_covar=reg_covar,
            tol=tol,
            max_iter=max_iter,
            callback=callback,
            init_index=i,
            start_lower_bound=start_lower_bound,
            model=model,
        )
        if best is None or result.lower_bound > best.lower_bound:
            best = result
    assert best is not None
    return best
