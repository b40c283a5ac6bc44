"""A compiled whole-array E-step for small data: model selection's thousands of tiny fits.

mclust's grid fits 14 models × 9 values of K, each to convergence, on data sets of a few
hundred rows. There an EM iteration is microseconds of arithmetic, and the reference kernel's
numpy calls (a few dozen per iteration, each microseconds of overhead) cost more than the
work. :class:`SmallExecutor` does the whole E-step in one compiled single-threaded pass over
the rows (no (n, K) temporaries, no threads to start), so that a grid over small data is bound
by its arithmetic. It implements the executor protocol, so :func:`gaussmix._em.run_em` and
every covariance model's M-step run on it unchanged; the conformance tests hold it to the
numpy reference.

Through ``run_em``, the M-step (a few dozen numpy calls: the constraint, batched Cholesky,
solve, log-determinants) still costs hundreds of microseconds per iteration, tens of times the
E-step's arithmetic on a few hundred rows. :func:`fit_small` runs the whole loop of one of
mclust's 14 models (E-step, M-step, factorisation, convergence test) in one compiled call that
releases the GIL, and reports a singular component as a status instead of raising, so that a
grid's fits can also run in threads. :func:`start_from_labels` is a cell's start (the M-step
on a partition) in one such call.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
from numba import njit
from numpy.typing import NDArray

from gaussmix import _jit  # noqa: F401  (numba's vector width, before any kernel compiles)
from gaussmix._covariance import INNER_MAX_ITER, INNER_TOL, MCLUST_MODELS, _collapsed
from gaussmix._gaussian import LOG_2PI
from gaussmix._mm_kernel import mm_orientation_loop
from gaussmix._params import MixtureParams
from gaussmix._stats import SuffStats
from gaussmix._vecmath import exp_nonpos, log_ge1, unliteral

__all__ = [
    "NON_FINITE",
    "OK",
    "STOPPED",
    "CellFit",
    "SmallExecutor",
    "SmallFit",
    "fit_cell",
    "fit_small",
    "start_from_labels",
]

_UNDERFLOW = -600.0


@njit(cache=True, nogil=True)
def _estep_full(X, w, means, P, const, shift):  # pragma: no cover - compiled
    n, d = X.shape
    K = means.shape[0]
    nk = np.zeros(K)
    sx = np.zeros((K, d))
    sxx = np.zeros((K, d, d))
    lj = np.empty(K)
    y = np.empty(d)
    c = np.empty(d)
    ll = 0.0
    for i in range(n):
        top = -np.inf
        for k in range(K):
            # y = (x - μ_k) P_k
            maha = 0.0
            for b in range(d):
                acc = 0.0
                for a in range(d):
                    acc += (X[i, a] - means[k, a]) * P[k, a, b]
                maha += acc * acc
            lj[k] = const[k] - 0.5 * maha
            if lj[k] > top:
                top = lj[k]
        s = 0.0
        for k in range(K):
            # below e^-600 a responsibility changes no sum it enters (they are O(1e-15) at
            # least: nk + 10 eps), but its products with the data go subnormal, and subnormal
            # arithmetic is ~100x slower: well-separated components made the E-step 5x slower
            lj[k] = 0.0 if lj[k] - top < _UNDERFLOW else np.exp(lj[k] - top)
            s += lj[k]
        wi = w[i]
        ll += wi * (top + np.log(s))
        for k in range(K):
            r = wi * lj[k] / s
            if r == 0.0:
                continue
            nk[k] += r
            for a in range(d):
                c[a] = X[i, a] - shift[k, a]
                y[a] = r * c[a]
                sx[k, a] += y[a]
            for a in range(d):
                for b in range(a + 1):
                    sxx[k, a, b] += y[a] * c[b]
    for k in range(K):
        for a in range(d):
            for b in range(a):
                sxx[k, b, a] = sxx[k, a, b]
    return nk, sx, sxx, ll


@njit(cache=True, nogil=True)
def _estep_diag(X, w, means, P, const, shift):  # pragma: no cover - compiled
    n, d = X.shape
    K = means.shape[0]
    nk = np.zeros(K)
    sx = np.zeros((K, d))
    sxx = np.zeros((K, d))
    lj = np.empty(K)
    ll = 0.0
    for i in range(n):
        top = -np.inf
        for k in range(K):
            maha = 0.0
            for a in range(d):
                v = (X[i, a] - means[k, a]) * P[k, a]
                maha += v * v
            lj[k] = const[k] - 0.5 * maha
            if lj[k] > top:
                top = lj[k]
        s = 0.0
        for k in range(K):
            # below e^-600 a responsibility changes no sum it enters (they are O(1e-15) at
            # least: nk + 10 eps), but its products with the data go subnormal, and subnormal
            # arithmetic is ~100x slower: well-separated components made the E-step 5x slower
            lj[k] = 0.0 if lj[k] - top < _UNDERFLOW else np.exp(lj[k] - top)
            s += lj[k]
        wi = w[i]
        ll += wi * (top + np.log(s))
        for k in range(K):
            r = wi * lj[k] / s
            if r == 0.0:
                continue
            nk[k] += r
            for a in range(d):
                c = X[i, a] - shift[k, a]
                sx[k, a] += r * c
                sxx[k, a] += r * c * c
    return nk, sx, sxx, ll


class SmallExecutor:
    """E-step over a small in-memory float64 array in one compiled single-threaded pass.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Checked, finite float64 data.
    sample_weight : ndarray of shape (n_samples,) or None
    """

    def __init__(self, X: NDArray, sample_weight: NDArray | None = None) -> None:
        self.X = kernel_array(X)
        self.n_samples, self.n_features = self.X.shape
        self.dtype = np.dtype(np.float64)
        self.sample_weight = sample_weight
        self._w = (
            np.ones(self.n_samples)
            if sample_weight is None
            else kernel_array(sample_weight)
        )
        self._wsum = float(self._w.sum())

    def e_step(self, params: MixtureParams, *, shift: NDArray | None = None) -> SuffStats:
        """Summed statistics of all rows under ``params`` (around ``shift``, default the means)."""
        shift = params.means if shift is None else shift
        model = params.model
        K, d = params.means.shape
        factors = kernel_array(model.component_factors(params.precisions_cholesky, K, d))
        with np.errstate(divide="ignore"):
            const = np.log(params.weights) + params.log_det_precision_cholesky - 0.5 * d * LOG_2PI
        kernel = _estep_full if model.moment == "full" else _estep_diag
        nk, sx, sxx, ll = kernel(
            self.X, self._w, kernel_array(params.means), factors, const, kernel_array(shift),
        )  # fmt: skip
        return SuffStats(np.asarray(shift), nk, sx, sxx, float(ll), self._wsum, self.n_samples)

    def init_data(self, max_rows, rng):
        """All rows: they are already in memory."""
        return self.X, self.sample_weight


# ------------------------------------------------------------------------------------------
# The whole EM loop compiled: fit_small
#
# The E-step above, the M-step of every mclust model (the algorithms, tolerances and warm
# starts of gaussmix._covariance, step for step) and the precision factorisation run in one
# nogil compiled call per fit, so that an iteration costs its arithmetic and several fits can
# run in threads. Results agree with run_em(SmallExecutor(X), ...) to rounding: the
# eigendecompositions are LAPACK's as there; the small Cholesky factorisations, inverses,
# determinants and sums are written out here. The MM loop (EVE, VVE) is gaussmix._mm_kernel's
# own, compiled into this file's functions; see _drop_stale_cache for what that means for
# numba's cache.
# (Functions are compiled with error_model="numpy": a division by zero gives inf/nan, as in
# numpy, instead of raising from inside the compiled loop.)

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}
# m_step's guard (scikit-learn's): an empty component keeps finite parameters
_EPS = 10 * np.finfo(np.float64).eps
_TINY = np.finfo(np.float64).tiny
#: status of a fit that ran without error
OK = -1
#: status of a fit whose log-likelihood became non-finite (run_em raises FloatingPointError)
NON_FINITE = -2
#: status of a fit stopped from outside (:func:`fit_cell`'s ``stop`` flag)
STOPPED = -3
#: model name -> integer code of the compiled loop; codes below _N_DIAGONAL store (K, d)
_CODES = {name: i for i, name in enumerate(MCLUST_MODELS)}
_N_DIAGONAL = 6
(_EII, _VII, _EEI, _VEI, _EVI, _VVI, _EEE, _VEE, _EVE, _VVE, _EEV, _VEV, _EVV, _VVV) = range(14)


# fit_small's E-step: the same sums as _estep_full/_estep_diag, laid out by component over
# all rows (the data transposed once per fit) so that the inner loops run over rows and
# vectorise; 'reassoc' lets the row sums vectorise too (their order, and so their last bits,
# then depend on the SIMD width, as BLAS's do). 2.4-3.9x faster than the row-major kernels on
# faithful, iris and banknote at K = 3 and 9.
_COLS = {**_JIT, "fastmath": {"reassoc", "contract"}}


# Rows go through in tiles of _TILE: a tile's (K, _TILE) log-joints, its slice of the
# transposed data and the scratch rows stay in L1 through all of its passes (over all rows at
# once, 100 000 rows' passes streamed from L3: 3-4x slower per row).
_TILE = 256


@njit(**_COLS)
def _responsibilities(Lk, w, top, s, t0, m):  # pragma: no cover - compiled
    """Log-joints ``Lk[:, :m]`` of rows ``t0 .. t0 + m`` -> weighted responsibilities in
    place; ``s[i] = w_i / Σ_k e_ik``; returns the tile's Σ w log p."""
    K = Lk.shape[0]
    for i in range(m):
        top[i] = Lk[0, i]
    for k in range(1, K):
        for i in range(m):
            top[i] = max(top[i], Lk[k, i])
    for i in range(m):
        s[i] = 0.0
    for k in range(K):
        for i in range(m):
            # see _estep_full: below e^-600 a responsibility changes no sum; exp_nonpos
            # vectorises (libm's exp per element was most of an iteration on small data)
            e = exp_nonpos(Lk[k, i] - top[i], _UNDERFLOW)
            Lk[k, i] = e
            s[i] += e
    ll = 0.0
    for i in range(m):
        # s[i] >= 1: the largest term is exp(0)
        ll += w[t0 + i] * (top[i] + log_ge1(s[i]))
    # a loop of its own: beside a store, the vectorised sum came with a run-time overlap test
    # of the arrays, whose scalar fallback adds in another order, so the last bits of the
    # log-likelihood followed where the heap put the arrays (a fit in a worker thread differed
    # from the main thread's; the parameters, free of the sum, did not)
    for i in range(m):
        s[i] = w[t0 + i] / s[i]
    for k in range(K):
        for i in range(m):
            Lk[k, i] *= s[i]
    return ll


@njit(**_JIT)
def _classify(Lk, w, s, t0, m, labels):  # pragma: no cover - compiled
    """After a tile's responsibilities: MAP labels of its rows and its part of ICL's
    ``Σ_i w_i log max_k r_ik`` (``s[i] = w_i / Σ_k e_ik``, the largest e being 1)."""
    K = Lk.shape[0]
    icl = 0.0
    for i in range(m):
        best = 0
        for k in range(1, K):
            if Lk[k, i] > Lk[best, i]:
                best = k
        labels[t0 + i] = best
        wi = w[t0 + i]
        if wi > 0.0:
            icl += wi * np.log(s[i] / wi)
    return icl


@njit(**_COLS)
def _estep_cols_full(XT, w, means, P, const, Lk, top, s, acc, labels,
                     classify):  # pragma: no cover - compiled
    """_estep_full (shift = means) over transposed data ``XT`` (d, n), tile by tile; scratch
    ``Lk`` (K, T), ``top``, ``s``, ``acc`` (T,) for tiles of T rows. ``P`` is upper triangular
    (``_precision_factor``). With ``classify``, also the MAP ``labels`` and ICL's term.
    """
    d, n = XT.shape
    K = means.shape[0]
    T = Lk.shape[1]
    nk = np.zeros(K)
    sx = np.zeros((K, d))
    sxx = np.zeros((K, d, d))
    ll = 0.0
    icl = 0.0
    for t0 in range(0, n, T):
        m = min(T, n - t0)
        for k in range(K):
            row = Lk[k]
            for i in range(m):
                row[i] = 0.0
            for b in range(d):
                for i in range(m):
                    acc[i] = 0.0
                for a in range(b + 1):
                    p = P[k, a, b]
                    mu = means[k, a]
                    xa = XT[a, t0:t0 + m]
                    for i in range(m):
                        acc[i] += (xa[i] - mu) * p
                for i in range(m):
                    row[i] += acc[i] * acc[i]
            c = const[k]
            for i in range(m):
                row[i] = c - 0.5 * row[i]
        ll += _responsibilities(Lk, w, top, s, t0, m)
        if classify:
            icl += _classify(Lk, w, s, t0, m, labels)
        for k in range(K):
            r = Lk[k]
            t = 0.0
            for i in range(m):
                t += r[i]
            nk[k] += t
            for a in range(d):
                mu = means[k, a]
                xa = XT[a, t0:t0 + m]
                for i in range(m):
                    acc[i] = r[i] * (xa[i] - mu)
                t = 0.0
                for i in range(m):
                    t += acc[i]
                sx[k, a] += t
                for b in range(a + 1):
                    mb = means[k, b]
                    xb = XT[b, t0:t0 + m]
                    t = 0.0
                    for i in range(m):
                        t += acc[i] * (xb[i] - mb)
                    sxx[k, a, b] += t
    for k in range(K):
        for a in range(d):
            for b in range(a):
                sxx[k, b, a] = sxx[k, a, b]
    return nk, sx, sxx, ll, icl


@njit(**_COLS)
def _estep_cols_diag(XT, w, means, P, const, Lk, top, s, acc, labels,
                     classify):  # pragma: no cover - compiled
    """_estep_diag (shift = means) over transposed data; see :func:`_estep_cols_full`."""
    d, n = XT.shape
    K = means.shape[0]
    T = Lk.shape[1]
    nk = np.zeros(K)
    sx = np.zeros((K, d))
    sxx = np.zeros((K, d))
    ll = 0.0
    icl = 0.0
    for t0 in range(0, n, T):
        m = min(T, n - t0)
        for k in range(K):
            row = Lk[k]
            for i in range(m):
                row[i] = 0.0
            for a in range(d):
                p = P[k, a]
                mu = means[k, a]
                xa = XT[a, t0:t0 + m]
                for i in range(m):
                    v = (xa[i] - mu) * p
                    row[i] += v * v
            c = const[k]
            for i in range(m):
                row[i] = c - 0.5 * row[i]
        ll += _responsibilities(Lk, w, top, s, t0, m)
        if classify:
            icl += _classify(Lk, w, s, t0, m, labels)
        for k in range(K):
            r = Lk[k]
            t = 0.0
            for i in range(m):
                t += r[i]
            nk[k] += t
            for a in range(d):
                mu = means[k, a]
                xa = XT[a, t0:t0 + m]
                t = 0.0
                u = 0.0
                for i in range(m):
                    v = xa[i] - mu
                    y = r[i] * v
                    t += y
                    u += y * v
                sx[k, a] += t
                sxx[k, a] += u
    return nk, sx, sxx, ll, icl


@njit(**_JIT)
def _geo_mean(v):  # pragma: no cover - compiled
    # det^(1/d) of a diagonal: 0 for a zero entry, nan for a negative one (caught later)
    s = 0.0
    for x in v:
        s += np.log(x)
    return np.exp(s / v.shape[0])


@njit(**_JIT)
def _fixed_point(lam, new, stall, tol):  # pragma: no cover - compiled
    """_covariance._fixed_point_step: ``lam[:] = new``; returns (done, stall)."""
    for x in new:
        if not np.isfinite(x):
            lam[:] = new
            return True, stall
    change = 0.0
    for k in range(new.shape[0]):
        c = abs(new[k] - lam[k]) / max(abs(new[k]), _TINY)
        if c > change:
            change = c
    floor = change < 1e-13 and change >= stall
    lam[:] = new
    return change <= tol or floor, change


@njit(**_JIT)
def _cholesky(A, L):  # pragma: no cover - compiled
    """Lower Cholesky factor of the (d, d) matrix ``A`` into ``L``; False where LAPACK's
    potrf would fail (a pivot not > 0, nan included) or the factor is not finite."""
    d = A.shape[0]
    for j in range(d):
        s = A[j, j]
        for m in range(j):
            s -= L[j, m] * L[j, m]
        if not s > 0.0:
            return False
        ljj = np.sqrt(s)
        if not np.isfinite(ljj):
            return False
        L[j, j] = ljj
        for i in range(j + 1, d):
            s = A[i, j]
            for m in range(j):
                s -= L[i, m] * L[j, m]
            v = s / ljj
            if not np.isfinite(v):
                return False
            L[i, j] = v
        for i in range(j):
            L[i, j] = 0.0
    return True


@njit(**_JIT)
def _precision_factor(L, U):  # pragma: no cover - compiled
    """``U = L⁻ᵀ`` (upper, precision ``U Uᵀ``) by forward substitution; returns ``log det U``."""
    d = L.shape[0]
    logdet = 0.0
    # column j of L⁻¹ is row j of U
    for j in range(d):
        for i in range(d):
            if i < j:
                U[j, i] = 0.0
                continue
            s = 1.0 if i == j else 0.0
            for m in range(j, i):
                s -= L[i, m] * U[j, m]
            U[j, i] = s / L[i, i]
        logdet += np.log(U[j, j])
    return logdet


@njit(**_JIT)
def _factor_full(cov, P, logdet):  # pragma: no cover - compiled
    """Precision factors of (K, d, d) covariances; the first singular component or OK."""
    K, d, _ = cov.shape
    L = np.empty((d, d))
    for k in range(K):
        if not _cholesky(cov[k], L):
            return k
        logdet[k] = _precision_factor(L, P[k])
    return OK


@njit(**_JIT)
def _factor_diag(cov, P, logdet):  # pragma: no cover - compiled
    """DiagCovariance.precision_cholesky: every variance must be > 0 (nan is not)."""
    K, d = cov.shape
    for k in range(K):
        for a in range(d):
            if not cov[k, a] > 0.0:
                return k
    for k in range(K):
        s = 0.0
        for a in range(d):
            P[k, a] = 1.0 / np.sqrt(cov[k, a])
            s += np.log(P[k, a])
        logdet[k] = s
    return OK


@njit(**_JIT)
def _det(A):  # pragma: no cover - compiled
    """Determinant by Gaussian elimination with partial pivoting (LAPACK getrf's pivots)."""
    d = A.shape[0]
    M = A.copy()
    det = 1.0
    for j in range(d):
        p = j
        for i in range(j + 1, d):
            if abs(M[i, j]) > abs(M[p, j]):
                p = i
        if M[p, j] == 0.0:
            return 0.0
        if p != j:
            for c in range(d):
                t = M[j, c]
                M[j, c] = M[p, c]
                M[p, c] = t
            det = -det
        det *= M[j, j]
        for i in range(j + 1, d):
            f = M[i, j] / M[j, j]
            for c in range(j + 1, d):
                M[i, c] -= f * M[j, c]
    return det


@njit(**_JIT)
def _sorted_eigh(A, omega, D):  # pragma: no cover - compiled
    """_covariance._sorted_eigh of one matrix: eigenvalues decreasing, clipped at 0."""
    d = A.shape[0]
    e, v = np.linalg.eigh(A)
    for j in range(d):
        omega[j] = max(e[d - 1 - j], 0.0)
        for i in range(d):
            D[i, j] = v[i, d - 1 - j]


@njit(**_JIT)
def _mm_start(W, nk, prev, has_prev, variable_volume):  # pragma: no cover - compiled
    """_mm_orientation's start: the common axes of ``prev`` (or of W / nk) and its shapes."""
    K, d, _ = W.shape
    start = np.empty((K, d, d))
    usable = has_prev
    if usable:
        for x in prev.ravel():
            if not np.isfinite(x):
                usable = False
                break
    for k in range(K):
        for a in range(d):
            for b in range(d):
                start[k, a, b] = prev[k, a, b] if usable else W[k, a, b] / nk[k]
    # _common_eigenvectors: a generic positive combination of the matrices
    combo = np.zeros((d, d))
    for k in range(K):
        tr = 0.0
        for a in range(d):
            tr += start[k, a, a]
        coef = 1.0 + 0.37 * np.sin((k + 1) * 1.7)
        c = coef / (tr if tr > 0 else 1.0)
        for a in range(d):
            for b in range(d):
                combo[a, b] += c * start[k, a, b]
    if not np.all(np.isfinite(combo)):
        return np.eye(d), _mm_fallback_shapes(W, nk, variable_volume)
    omega = np.empty(d)
    D = np.empty((d, d))
    _sorted_eigh(combo, omega, D)
    A = np.empty((K, d))
    good = True
    for k in range(K):
        for i in range(d):
            s = 0.0
            for j in range(d):
                t = 0.0
                for m in range(d):
                    t += start[k, j, m] * D[m, i]
                s += D[j, i] * t
            A[k, i] = s
        # EVE's shapes have determinant one; VVE's carry λ_k
        g = 1.0 if variable_volume else _geo_mean(A[k])
        for i in range(d):
            A[k, i] = A[k, i] / g
            if not (np.isfinite(A[k, i]) and A[k, i] > 0):
                good = False
    if not good:
        return np.eye(d), _mm_fallback_shapes(W, nk, variable_volume)
    return D, A


@njit(**_JIT)
def _mm_fallback_shapes(W, nk, variable_volume):  # pragma: no cover - compiled
    K, d, _ = W.shape
    A = np.ones((K, d))
    if variable_volume:
        for k in range(K):
            for j in range(d):
                A[k, j] = W[k, j, j] / nk[k]
    return A


@njit(**_JIT)
def _covariances_full(code, nk, W, prev, prev_logdet, has_prev, inner_tol, inner_max,
                      cov):  # pragma: no cover - compiled
    """Each general model's ``_covariances`` (before symmetrisation) into ``cov``."""
    K, d, _ = W.shape
    ntot = nk.sum()
    if code == _EEE:
        for a in range(d):
            for b in range(d):
                s = 0.0
                for k in range(K):
                    s += W[k, a, b]
                for k in range(K):
                    cov[k, a, b] = s / ntot
    elif code == _VVV:
        for k in range(K):
            for a in range(d):
                for b in range(d):
                    cov[k, a, b] = W[k, a, b] / nk[k]
    elif code == _EVV:
        g = np.empty(K)
        for k in range(K):
            g[k] = max(_det(W[k]), 0.0) ** (1.0 / d)
        lam = g.sum() / ntot
        for k in range(K):
            for a in range(d):
                for b in range(d):
                    cov[k, a, b] = lam * W[k, a, b] / g[k]
    elif code == _VEE:
        lam = np.ones(K)
        if has_prev:
            for k in range(K):
                v = np.exp(-2.0 * prev_logdet[k] / d)  # det(Σ_k)^(1/d)
                lam[k] = v if np.isfinite(v) else 1.0
        new = np.empty(K)
        C = np.empty((d, d))
        L = np.empty((d, d))
        U = np.empty((d, d))
        stall = np.inf
        for _ in range(inner_max):
            C[:, :] = 0.0
            for k in range(K):
                inv = 1.0 / lam[k]
                for a in range(d):
                    for b in range(d):
                        C[a, b] += inv * W[k, a, b]
            det = _det(C)
            scale = det ** (1.0 / d)
            for a in range(d):
                for b in range(d):
                    C[a, b] = C[a, b] / scale
            if not _cholesky(C, L):  # not positive definite: singular, reported below
                cov[:, :, :] = np.nan
                return
            _precision_factor(L, U)  # C⁻¹ = U Uᵀ
            for k in range(K):
                tr = 0.0
                for a in range(d):
                    for b in range(d):
                        ci = 0.0
                        for m in range(d):
                            ci += U[a, m] * U[b, m]
                        tr += W[k, a, b] * ci
                new[k] = tr / (d * nk[k])
            done, stall = _fixed_point(lam, new, stall, inner_tol)
            if done:
                break
        for k in range(K):
            for a in range(d):
                for b in range(d):
                    cov[k, a, b] = lam[k] * C[a, b]
    elif code == _EVE or code == _VVE:
        variable = code == _VVE
        D0, A0 = _mm_start(W, nk, prev, has_prev, variable)
        omega = np.empty(K)
        for k in range(K):
            omega[k] = np.linalg.eigvalsh(W[k])[d - 1]
        D, A, target, ok = mm_orientation_loop(W, nk, D0, A0, omega, variable, inner_tol,
                                               inner_max)
        if not ok:
            cov[:, :, :] = np.nan
            return
        lam = 1.0 if variable else target / (ntot * d)
        for k in range(K):
            for i in range(d):
                for m in range(d):
                    s = 0.0
                    for j in range(d):
                        s += D[i, j] * A[k, j] * D[m, j]
                    cov[k, i, m] = lam * s
    else:  # EEV, VEV: each component's own axes
        omega = np.empty((K, d))
        D = np.empty((K, d, d))
        for k in range(K):
            _sorted_eigh(W[k], omega[k], D[k])
        diag = np.zeros((K, d))
        if code == _EEV:
            for j in range(d):
                s = 0.0
                for k in range(K):
                    s += omega[k, j]
                for k in range(K):
                    diag[k, j] = s / ntot
        else:
            lam = np.ones(K)
            if has_prev:
                for k in range(K):
                    v = np.exp(-2.0 * prev_logdet[k] / d)
                    lam[k] = v if np.isfinite(v) else 1.0
            A = np.empty(d)
            new = np.empty(K)
            stall = np.inf
            for _ in range(inner_max):
                for j in range(d):
                    s = 0.0
                    for k in range(K):
                        s += omega[k, j] / lam[k]
                    A[j] = s
                g = _geo_mean(A)
                for j in range(d):
                    A[j] = A[j] / g
                for k in range(K):
                    s = 0.0
                    for j in range(d):
                        s += omega[k, j] / A[j]
                    new[k] = s / (d * nk[k])
                done, stall = _fixed_point(lam, new, stall, inner_tol)
                if done:
                    break
            for k in range(K):
                for j in range(d):
                    diag[k, j] = lam[k] * A[j]
        for k in range(K):
            for i in range(d):
                for m in range(d):
                    s = 0.0
                    for j in range(d):
                        s += D[k, i, j] * diag[k, j] * D[k, m, j]
                    cov[k, i, m] = s


@njit(**_JIT)
def _covariances_diag(code, nk, W, prev, has_prev, inner_tol, inner_max,
                      cov):  # pragma: no cover - compiled
    """Each diagonal model's ``_covariances`` into ``cov`` (K, d)."""
    K, d = W.shape
    ntot = nk.sum()
    if code == _EII:
        s = 0.0
        for k in range(K):
            for a in range(d):
                s += W[k, a]
        cov[:, :] = s / (ntot * d)
    elif code == _VII:
        for k in range(K):
            s = 0.0
            for a in range(d):
                s += W[k, a]
            cov[k, :] = s / (nk[k] * d)
    elif code == _EEI:
        for a in range(d):
            s = 0.0
            for k in range(K):
                s += W[k, a]
            cov[:, a] = s / ntot
    elif code == _EVI:
        g = np.empty(K)
        for k in range(K):
            g[k] = _geo_mean(W[k])
        lam = g.sum() / ntot
        for k in range(K):
            for a in range(d):
                cov[k, a] = lam * W[k, a] / g[k]
    elif code == _VVI:
        for k in range(K):
            for a in range(d):
                cov[k, a] = W[k, a] / nk[k]
    else:  # VEI: Celeux & Govaert's fixed point, warm-started from the previous volumes
        lam = np.ones(K)
        if has_prev:
            for k in range(K):
                lam[k] = _geo_mean(prev[k])
        B = np.empty(d)
        new = np.empty(K)
        stall = np.inf
        for _ in range(inner_max):
            for a in range(d):
                s = 0.0
                for k in range(K):
                    s += W[k, a] / lam[k]
                B[a] = s
            g = _geo_mean(B)
            for a in range(d):
                B[a] = B[a] / g
            for k in range(K):
                s = 0.0
                for a in range(d):
                    s += W[k, a] / B[a]
                new[k] = s / (d * nk[k])
            done, stall = _fixed_point(lam, new, stall, inner_tol)
            if done:
                break
        for k in range(K):
            for a in range(d):
                cov[k, a] = lam[k] * B[a]


@njit(**_JIT)
def _m_step_diag(code, stats, shift, reg, prev, has_prev, inner_tol, inner_max, weights, means,
                 cov):  # pragma: no cover - compiled
    """gaussmix._stats.m_step for a diagonal model: new weights, means, covariances."""
    nk0, sx, sxx = stats
    K, d = shift.shape
    nk = nk0 + _EPS
    W = np.empty((K, d))
    for k in range(K):
        for a in range(d):
            delta = sx[k, a] / nk[k]
            means[k, a] = shift[k, a] + delta
            W[k, a] = (sxx[k, a] - nk[k] * delta * delta) + nk[k] * reg
    _covariances_diag(code, nk, W, prev, has_prev, inner_tol, inner_max, cov)
    ntot = nk.sum()
    for k in range(K):
        weights[k] = nk[k] / ntot


@njit(**_JIT)
def _m_step_full(code, stats, shift, reg, prev, prev_logdet, has_prev, inner_tol, inner_max,
                 weights, means, cov):  # pragma: no cover - compiled
    """gaussmix._stats.m_step for a general model: new weights, means, covariances."""
    nk0, sx, sxx = stats
    K, d = shift.shape
    nk = nk0 + _EPS
    W = np.empty((K, d, d))
    delta = np.empty(d)
    finite = True
    for k in range(K):
        for a in range(d):
            delta[a] = sx[k, a] / nk[k]
            means[k, a] = shift[k, a] + delta[a]
        for a in range(d):
            for b in range(d):
                W[k, a, b] = sxx[k, a, b] - nk[k] * delta[a] * delta[b]
            W[k, a, a] += nk[k] * reg
        for a in range(d):
            for b in range(a):
                v = (W[k, a, b] + W[k, b, a]) / 2.0
                W[k, a, b] = v
                W[k, b, a] = v
                finite = finite and np.isfinite(v)
            finite = finite and np.isfinite(W[k, a, a])
    ntot = nk.sum()
    for k in range(K):
        weights[k] = nk[k] / ntot
    if not finite:  # LAPACK refuses non-finite input: singular, reported by the caller
        cov[:, :, :] = np.nan
        return
    _covariances_full(code, nk, W, prev, prev_logdet, has_prev, inner_tol, inner_max, cov)
    for k in range(K):
        for a in range(d):
            for b in range(a):
                v = (cov[k, a, b] + cov[k, b, a]) / 2.0
                cov[k, a, b] = v
                cov[k, b, a] = v


@njit(**_JIT)
def _fit_diag(X, w, wsum, code, weights, means, cov, reg, tol, max_iter, warm, start_lb,
              inner_tol, inner_max, rel_tol, stop):  # pragma: no cover - compiled
    """run_em for a diagonal model; see :func:`fit_small`."""
    K, d = means.shape
    P = np.empty((K, d))
    logdet = np.empty(K)
    lbs = np.empty(max(max_iter, 0))
    n_iter = 0
    converged = False
    status = _factor_diag(cov, P, logdet)
    if status != OK:
        return weights, means, cov, P, lbs[:0], n_iter, converged, status
    prev = cov.copy()
    has_prev = warm
    new_w = np.empty(K)
    new_m = np.empty((K, d))
    new_c = np.empty((K, d))
    new_P = np.empty((K, d))
    new_ld = np.empty(K)
    previous = start_lb
    half_d_log_2pi = 0.5 * d * LOG_2PI
    XT = np.ascontiguousarray(X.T)
    T = min(X.shape[0], _TILE)
    Lk = np.empty((K, T))
    top = np.empty(T)
    s = np.empty(T)
    acc = np.empty(T)
    no_labels = np.empty(0, dtype=np.intp)
    const = np.empty(K)
    for it in range(max_iter):
        if stop[0]:  # another thread asked the grid to stop
            status = STOPPED
            break
        for k in range(K):
            const[k] = np.log(weights[k]) + logdet[k] - half_d_log_2pi
        nk, sx, sxx, ll, _ = _estep_cols_diag(XT, w, means, P, const, Lk, top, s, acc,
                                               no_labels, unliteral(False))
        lower_bound = ll / wsum
        if not np.isfinite(lower_bound):
            status = NON_FINITE
            break
        _m_step_diag(code, (nk, sx, sxx), means, reg, prev, has_prev, inner_tol, inner_max,
                     new_w, new_m, new_c)
        status = _factor_diag(new_c, new_P, new_ld)
        weights, new_w = new_w, weights
        means, new_m = new_m, means
        cov, new_c = new_c, cov
        if status != OK:
            break
        P, new_P = new_P, P
        logdet, new_ld = new_ld, logdet
        prev[:, :] = cov
        has_prev = True
        lbs[it] = lower_bound
        n_iter = it + 1
        # rel_tol: mclust's test |Δ log L| <= tol (1 + |log L|) on the total, per row here
        if abs(lower_bound - previous) < tol + rel_tol * (1.0 / wsum + abs(lower_bound)):
            converged = True
            break
        previous = lower_bound
    return weights, means, cov, P, lbs[:n_iter], n_iter, converged, status


@njit(**_JIT)
def _fit_full(X, w, wsum, code, weights, means, cov, reg, tol, max_iter, warm, start_lb,
              inner_tol, inner_max, rel_tol, stop):  # pragma: no cover - compiled
    """run_em for a general model; see :func:`fit_small`."""
    K, d = means.shape
    P = np.empty((K, d, d))
    logdet = np.empty(K)
    lbs = np.empty(max(max_iter, 0))
    n_iter = 0
    converged = False
    status = _factor_full(cov, P, logdet)
    if status != OK:
        return weights, means, cov, P, lbs[:0], n_iter, converged, status
    prev = cov.copy()
    prev_logdet = logdet.copy()
    has_prev = warm
    new_w = np.empty(K)
    new_m = np.empty((K, d))
    new_c = np.empty((K, d, d))
    new_P = np.empty((K, d, d))
    new_ld = np.empty(K)
    previous = start_lb
    half_d_log_2pi = 0.5 * d * LOG_2PI
    XT = np.ascontiguousarray(X.T)
    T = min(X.shape[0], _TILE)
    Lk = np.empty((K, T))
    top = np.empty(T)
    s = np.empty(T)
    acc = np.empty(T)
    no_labels = np.empty(0, dtype=np.intp)
    const = np.empty(K)
    for it in range(max_iter):
        if stop[0]:  # another thread asked the grid to stop
            status = STOPPED
            break
        for k in range(K):
            const[k] = np.log(weights[k]) + logdet[k] - half_d_log_2pi
        nk, sx, sxx, ll, _ = _estep_cols_full(XT, w, means, P, const, Lk, top, s, acc,
                                               no_labels, unliteral(False))
        lower_bound = ll / wsum
        if not np.isfinite(lower_bound):
            status = NON_FINITE
            break
        _m_step_full(code, (nk, sx, sxx), means, reg, prev, prev_logdet, has_prev, inner_tol,
                     inner_max, new_w, new_m, new_c)
        status = _factor_full(new_c, new_P, new_ld)
        weights, new_w = new_w, weights
        means, new_m = new_m, means
        cov, new_c = new_c, cov
        if status != OK:
            break
        P, new_P = new_P, P
        logdet, new_ld = new_ld, logdet
        prev[:, :, :] = cov
        prev_logdet[:] = logdet
        has_prev = True
        lbs[it] = lower_bound
        n_iter = it + 1
        # rel_tol: mclust's test |Δ log L| <= tol (1 + |log L|) on the total, per row here
        if abs(lower_bound - previous) < tol + rel_tol * (1.0 / wsum + abs(lower_bound)):
            converged = True
            break
        previous = lower_bound
    return weights, means, cov, P, lbs[:n_iter], n_iter, converged, status


class SmallFit(NamedTuple):
    """Outcome of :func:`fit_small`.

    Attributes
    ----------
    weights, means, covariances : ndarray
        Parameters after the last M-step (covariances in the model's storage: (K, d)
        variances for the diagonal models, (K, d, d) matrices otherwise). When ``status`` is a
        component index they are the output of the M-step whose covariances could not be
        factorised; when it is :data:`NON_FINITE`, those of the failed E-step.
    lower_bounds : ndarray of shape (n_iter,)
        Mean log-likelihood per sample of every iteration's E-step (``run_em``'s).
    n_iter : int
        Iterations completed (a failed one is not counted, as ``run_em`` counts).
    converged : bool
        Whether ``|change| < tol`` was reached.
    status : int
        :data:`OK`; the index of the first component whose covariance is not positive
        definite (``run_em`` raises :class:`CollapsedComponentError`); or :data:`NON_FINITE`
        (a non-finite log-likelihood: ``run_em`` raises ``FloatingPointError``).
    precisions_cholesky : ndarray
        Factors of ``covariances`` as :class:`MixtureParams` stores them (valid when
        ``status == OK``).
    """

    weights: NDArray
    means: NDArray
    covariances: NDArray
    lower_bounds: NDArray
    n_iter: int
    converged: bool
    status: int
    precisions_cholesky: NDArray

    def raise_for_status(self, reg_covar: float | None = None) -> None:
        """Raise the error ``run_em`` raises for this outcome (nothing when it is OK).

        Raises
        ------
        CollapsedComponentError
            A component's covariance is not positive definite.
        FloatingPointError
            The log-likelihood became non-finite.
        """
        if self.status == NON_FINITE:
            raise FloatingPointError(
                "the log-likelihood became non-finite during EM; rescale the data or "
                "increase reg_covar"
            )
        if self.status != OK:
            raise _collapsed(self.status, reg_covar, self.covariances)

    def params(self, model_name: str) -> MixtureParams:
        """The fitted parameters as :class:`MixtureParams` (no refactorisation).

        Parameters
        ----------
        model_name : str
            The mclust model the fit ran.
        """
        self.raise_for_status()
        return MixtureParams.from_precisions_cholesky(
            self.weights, self.means, self.precisions_cholesky, model_name,
            covariances=self.covariances,
        )  # fmt: skip


def _model_code(model_name: str) -> int:
    try:
        return _CODES[model_name]
    except (KeyError, TypeError):
        raise ValueError(
            f"model_name must be one of {list(MCLUST_MODELS)}, got {model_name!r}"
        ) from None


def kernel_array(a: NDArray) -> NDArray:
    """``a`` as a C-contiguous, writeable float64 array (a copy only if it is not one).

    numba types a read-only array (a memory-mapped ``.npy`` file, a broadcast view) as
    another type than a writeable one and compiles every kernel it reaches again for it:
    ~25 s more of a cold compile for a fit on a ``.npy`` file after one on a CSV file.
    """
    return np.require(a, np.float64, ["C", "W"])


def _row_weights(sample_weight: NDArray | None, n: int) -> NDArray:
    if sample_weight is None:
        return np.ones(n)
    w = kernel_array(sample_weight)
    if w.shape != (n,):
        raise ValueError(f"sample_weight must have shape {(n,)}, got {w.shape}")
    return w


def fit_small(
    X: NDArray,
    sample_weight: NDArray | None,
    model_name: str,
    weights: NDArray,
    means: NDArray,
    covariances: NDArray,
    *,
    reg_covar: float,
    tol: float,
    max_iter: int,
    warm_start: bool = True,
    start_lower_bound: float = -np.inf,
) -> SmallFit:
    """Run EM for one of mclust's 14 models in one compiled call (no GIL held).

    Step for step :func:`gaussmix._em.run_em` over :class:`SmallExecutor` with
    :func:`gaussmix._stats.m_step`: the same E-step kernel, each model's M-step algorithm,
    inner tolerances and warm starts, the same convergence test ``|change| < tol`` on the
    mean log-likelihood, whose value at iteration t is that of the E-step at the parameters
    before that iteration's M-step. Results agree with it to rounding. Errors do not raise:
    they come back as ``status`` (see :meth:`SmallFit.raise_for_status`), so that several
    fits can run in threads.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Checked, finite data.
    sample_weight : ndarray of shape (n_samples,) or None
        Row weights (None: all ones).
    model_name : str
        One of mclust's 14 names, ``"EII"`` ... ``"VVV"``.
    weights : ndarray of shape (n_components,)
    means : ndarray of shape (n_components, n_features)
    covariances : ndarray
        Starting covariances in the model's storage: (K, d) variances for the diagonal
        models (EII ... VVI), (K, d, d) matrices for the others.
    reg_covar : float
        Non-negative regularisation (as in ``m_step``).
    tol : float
        Convergence threshold on the change of the mean log-likelihood (negative: run
        ``max_iter`` iterations).
    max_iter : int
        Maximum number of iterations.
    warm_start : bool, default=True
        The first M-step of an iterative model starts from ``covariances`` (``run_em`` from
        parameters of this model); False starts it cold (``run_em`` with ``model=`` given
        and a start of another model).
    start_lower_bound : float, default=-inf
        Lower bound before the first iteration.

    Returns
    -------
    fit : SmallFit
    """
    code = _model_code(model_name)
    X = kernel_array(X)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D array, got shape {X.shape}")
    n, d = X.shape
    # copies: the compiled loop swaps its buffers, the caller's arrays stay as they were
    weights = np.array(weights, dtype=np.float64, order="C")
    means = np.array(means, dtype=np.float64, order="C")
    covariances = np.array(covariances, dtype=np.float64, order="C")
    K = weights.shape[0] if weights.ndim == 1 else -1
    diagonal = code < _N_DIAGONAL
    want = (K, d) if diagonal else (K, d, d)
    # the compiled code does not check bounds: wrong shapes must stop here
    if weights.ndim != 1 or K < 1:
        raise ValueError(f"weights must be a non-empty 1-D array, got shape {weights.shape}")
    if means.shape != (K, d):
        raise ValueError(f"means must have shape {(K, d)}, got {means.shape}")
    if covariances.shape != want:
        raise ValueError(f"{model_name} covariances must have shape {want}, got "
                         f"{covariances.shape}")
    w = _row_weights(sample_weight, n)
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 0:
        raise ValueError(f"max_iter must be a non-negative integer, got {max_iter!r}")
    if not reg_covar >= 0.0:
        raise ValueError(f"reg_covar must be non-negative, got {reg_covar!r}")
    kernel = _fit_diag if diagonal else _fit_full
    out = kernel(
        X, w, float(w.sum()), code, weights, means, covariances, float(reg_covar), float(tol),
        int(max_iter), bool(warm_start), float(start_lower_bound), float(INNER_TOL),
        int(INNER_MAX_ITER), 0.0, np.zeros(1, dtype=np.uint8),
    )  # fmt: skip
    weights, means, covariances, P, lbs, n_iter, converged, status = out
    return SmallFit(weights, means, covariances, lbs, int(n_iter), bool(converged), int(status), P)


@njit(**_JIT)
def _label_stats(X, w, labels, shift, full):  # pragma: no cover - compiled
    """``(nk, sx, sxx)`` of a hard partition around ``shift`` (full or diagonal ``sxx``)."""
    n, d = X.shape
    K = shift.shape[0]
    nk = np.zeros(K)
    sx = np.zeros((K, d))
    sxx = np.zeros((K, d, d)) if full else np.zeros((K, 1, d))
    c = np.empty(d)
    for i in range(n):
        k = labels[i]
        wi = w[i]
        nk[k] += wi
        for a in range(d):
            c[a] = X[i, a] - shift[k, a]
            sx[k, a] += wi * c[a]
        if full:
            for a in range(d):
                for b in range(a + 1):
                    sxx[k, a, b] += wi * c[a] * c[b]
        else:
            for a in range(d):
                sxx[k, 0, a] += wi * c[a] * c[a]
    if full:
        for k in range(K):
            for a in range(d):
                for b in range(a):
                    sxx[k, b, a] = sxx[k, a, b]
    return nk, sx, sxx


@njit(**_JIT)
def _labels_diag(X, w, labels, shift, code, reg, inner_tol, inner_max):  # pragma: no cover
    K, d = shift.shape
    nk, sx, sxx = _label_stats(X, w, labels, shift, unliteral(False))
    weights = np.empty(K)
    means = np.empty((K, d))
    cov = np.empty((K, d))
    no_previous = np.empty((K, d))
    _m_step_diag(code, (nk, sx, sxx[:, 0, :].copy()), shift, reg, no_previous, unliteral(False),
                 inner_tol, inner_max, weights, means, cov)
    P = np.empty((K, d))
    status = _factor_diag(cov, P, np.empty(K))
    return weights, means, cov, P, status


@njit(**_JIT)
def _labels_full(X, w, labels, shift, code, reg, inner_tol, inner_max):  # pragma: no cover
    K, d = shift.shape
    nk, sx, sxx = _label_stats(X, w, labels, shift, unliteral(True))
    weights = np.empty(K)
    means = np.empty((K, d))
    cov = np.empty((K, d, d))
    no_previous = np.empty((K, d, d))
    _m_step_full(code, (nk, sx, sxx), shift, reg, no_previous, np.empty(K), unliteral(False),
                 inner_tol, inner_max, weights, means, cov)
    P = np.empty((K, d, d))
    status = _factor_full(cov, P, np.empty(K))
    return weights, means, cov, P, status


def start_from_labels(
    X: NDArray,
    sample_weight: NDArray | None,
    labels: NDArray,
    n_components: int,
    model_name: str,
    *,
    reg_covar: float,
) -> SmallFit:
    """A model's starting parameters from a hard partition, in one compiled call.

    The M-step of :func:`gaussmix._init._from_labels` (statistics of the partition around
    the weighted data mean, ``m_step`` with a cold start) without its numpy calls: a grid
    starts every cell from a partition, and on small data that M-step costs more than many
    EM iterations.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Checked, finite data.
    sample_weight : ndarray of shape (n_samples,) or None
    labels : ndarray of shape (n_samples,) of int
        Component of every row, in ``[0, n_components)``.
    n_components : int
    model_name : str
        One of mclust's 14 names.
    reg_covar : float
        Non-negative regularisation.

    Returns
    -------
    start : SmallFit
        ``n_iter`` 0, no lower bounds; ``status`` as in :func:`fit_small` (a component
        whose covariance is not positive definite, e.g. an empty one without
        regularisation).
    """
    code = _model_code(model_name)
    X = kernel_array(X)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D array, got shape {X.shape}")
    n = X.shape[0]
    w = _row_weights(sample_weight, n)
    K = int(n_components)
    if K < 1:
        raise ValueError(f"n_components must be a positive integer, got {n_components!r}")
    labels = np.asarray(labels)
    if labels.shape != (n,) or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be {n} integers, got shape {labels.shape} of "
                         f"{labels.dtype}")  # fmt: skip
    # the compiled code does not check bounds
    if n and (labels.min() < 0 or labels.max() >= K):
        raise ValueError(f"labels must lie in [0, {K}), got {labels.min()}..{labels.max()}")
    if not reg_covar >= 0.0:
        raise ValueError(f"reg_covar must be non-negative, got {reg_covar!r}")
    centre = w @ X / w.sum()
    shift = np.repeat(centre[None], K, axis=0)
    kernel = _labels_diag if code < _N_DIAGONAL else _labels_full
    weights, means, cov, P, status = kernel(
        X, w, labels.astype(np.intp), shift, code, float(reg_covar), float(INNER_TOL),
        int(INNER_MAX_ITER),
    )  # fmt: skip
    return SmallFit(weights, means, cov, np.empty(0), 0, False, int(status), P)


# ------------------------------------------------------------------------------------------
# A grid cell's fit in one call: start from a partition (or from parameters), EM, and what
# model selection needs of the end (log-likelihood at the final parameters, ICL's
# classification term, the classification itself, why the fit is not usable), so that a
# grid's hundreds of fits cost no numpy call each.

#: degenerate codes of :class:`CellFit`
FIT_USABLE, FIT_EMPTY, FIT_SINGULAR = 0, 1, 2


@njit(**_JIT)
def _usable(nk, spectrum_min, spectrum_max, reg):  # pragma: no cover - compiled
    """(code, component) of the first reason a fit is not a usable model, as mclust calls
    it: a column sum of z below sqrt(eps) (empty), or an eigenvalue ratio at rounding level
    beyond ``reg`` (singular)."""
    rteps = np.sqrt(np.finfo(np.float64).eps)
    for k in range(nk.shape[0]):
        if nk[k] < rteps:
            return FIT_EMPTY, k
    for k in range(nk.shape[0]):
        if spectrum_min[k] - reg <= 100.0 * np.finfo(np.float64).eps * spectrum_max[k]:
            return FIT_SINGULAR, k
    return FIT_USABLE, -1


@njit(**_JIT)
def _end_diag(X, w, wsum, cov, weights, means, reg, labels):  # pragma: no cover - compiled
    K, d = means.shape
    n = X.shape[0]
    P = np.empty((K, d))
    logdet = np.empty(K)
    status = _factor_diag(cov, P, logdet)
    if status != OK:
        return -np.inf, 0.0, np.zeros(K), FIT_SINGULAR, status
    const = np.empty(K)
    for k in range(K):
        const[k] = np.log(weights[k]) + logdet[k] - 0.5 * d * LOG_2PI
    T = min(n, _TILE)
    nk, _, _, ll, icl = _estep_cols_diag(np.ascontiguousarray(X.T), w, means, P, const,
                                          np.empty((K, T)), np.empty(T), np.empty(T),
                                          np.empty(T), labels, unliteral(True))
    lo = np.empty(K)
    hi = np.empty(K)
    for k in range(K):
        lo[k] = cov[k].min()
        hi[k] = cov[k].max()
    why, comp = _usable(nk / wsum, lo, hi, reg)
    return ll, icl, nk, why, comp


@njit(**_JIT)
def _end_full(X, w, wsum, cov, weights, means, reg, labels):  # pragma: no cover - compiled
    K, d = means.shape
    n = X.shape[0]
    P = np.empty((K, d, d))
    logdet = np.empty(K)
    status = _factor_full(cov, P, logdet)
    if status != OK:
        return -np.inf, 0.0, np.zeros(K), FIT_SINGULAR, status
    const = np.empty(K)
    for k in range(K):
        const[k] = np.log(weights[k]) + logdet[k] - 0.5 * d * LOG_2PI
    T = min(n, _TILE)
    nk, _, _, ll, icl = _estep_cols_full(np.ascontiguousarray(X.T), w, means, P, const,
                                          np.empty((K, T)), np.empty(T), np.empty(T),
                                          np.empty(T), labels, unliteral(True))
    lo = np.empty(K)
    hi = np.empty(K)
    for k in range(K):
        e = np.linalg.eigvalsh(cov[k])
        lo[k] = e[0]
        hi[k] = e[d - 1]
    why, comp = _usable(nk / wsum, lo, hi, reg)
    return ll, icl, nk, why, comp


@njit(**_JIT)
def _mean_shift(X, w, wsum, K):  # pragma: no cover - compiled
    """The weighted data mean as every component's shift (a partition's statistics)."""
    n, d = X.shape
    centre = np.zeros(d)
    for i in range(n):
        for a in range(d):
            centre[a] += w[i] * X[i, a]
    shift = np.empty((K, d))
    for k in range(K):
        for a in range(d):
            shift[k, a] = centre[a] / wsum
    return shift


@njit(**_JIT)
def _cell_diag(X, w, wsum, code, K, labels, weights, means, cov, from_labels, reg, tol, rel_tol,
               max_iter, inner_tol, inner_max, stop):  # pragma: no cover - compiled
    warm = unliteral(True)  # fit_small's type for it: one compiled _fit_* for both
    if from_labels:
        shift = _mean_shift(X, w, wsum, K)
        weights, means, cov, _, status = _labels_diag(X, w, labels, shift, code, reg,
                                                      inner_tol, inner_max)
        if status != OK:
            return (weights, means, cov, np.empty(0), 0, False, status, -np.inf, 0.0,
                    FIT_SINGULAR, status)
    weights, means, cov, _, lbs, n_iter, converged, status = _fit_diag(
        X, w, wsum, code, weights, means, cov, reg, tol, max_iter, warm, -np.inf, inner_tol,
        inner_max, rel_tol, stop)
    if status != OK:
        return (weights, means, cov, lbs, n_iter, converged, status, -np.inf, 0.0, FIT_SINGULAR,
                status)
    ll, icl, _, why, comp = _end_diag(X, w, wsum, cov, weights, means, reg, labels)
    return weights, means, cov, lbs, n_iter, converged, status, ll, icl, why, comp


@njit(**_JIT)
def _cell_full(X, w, wsum, code, K, labels, weights, means, cov, from_labels, reg, tol, rel_tol,
               max_iter, inner_tol, inner_max, stop):  # pragma: no cover - compiled
    warm = unliteral(True)  # fit_small's type for it: one compiled _fit_* for both
    if from_labels:
        shift = _mean_shift(X, w, wsum, K)
        weights, means, cov, _, status = _labels_full(X, w, labels, shift, code, reg,
                                                      inner_tol, inner_max)
        if status != OK:
            return (weights, means, cov, np.empty(0), 0, False, status, -np.inf, 0.0,
                    FIT_SINGULAR, status)
    weights, means, cov, _, lbs, n_iter, converged, status = _fit_full(
        X, w, wsum, code, weights, means, cov, reg, tol, max_iter, warm, -np.inf, inner_tol,
        inner_max, rel_tol, stop)
    if status != OK:
        return (weights, means, cov, lbs, n_iter, converged, status, -np.inf, 0.0, FIT_SINGULAR,
                status)
    ll, icl, _, why, comp = _end_full(X, w, wsum, cov, weights, means, reg, labels)
    return weights, means, cov, lbs, n_iter, converged, status, ll, icl, why, comp


class CellFit(NamedTuple):
    """Outcome of :func:`fit_cell`.

    Attributes
    ----------
    weights, means, covariances : ndarray
        Parameters at the end (covariances in the model's storage).
    lower_bounds : ndarray of shape (n_iter,)
        Mean log-likelihood of every EM iteration's E-step.
    n_iter : int
    converged : bool
    status : int
        As :attr:`SmallFit.status` (:data:`OK` or why EM stopped on an error).
    log_likelihood : float
        Total weighted log-likelihood at the final parameters (-inf on an error).
    icl_term : float
        ``Σ_i w_i log max_k r_ik`` at the final parameters.
    labels : ndarray of shape (n_samples,)
        The final MAP classification.
    degenerate : int
        :data:`FIT_USABLE`, :data:`FIT_EMPTY` or :data:`FIT_SINGULAR` (mclust's NA).
    component : int
        The component ``degenerate`` or ``status`` is about (-1 when usable).
    """

    weights: NDArray
    means: NDArray
    covariances: NDArray
    lower_bounds: NDArray
    n_iter: int
    converged: bool
    status: int
    log_likelihood: float
    icl_term: float
    labels: NDArray
    degenerate: int
    component: int

    def params(self, model_name: str) -> MixtureParams:
        """The fitted parameters (refactorised from the covariances)."""
        from gaussmix._covariance import get_model

        return MixtureParams.from_covariances(
            self.weights, self.means, self.covariances, get_model(model_name)
        )


def fit_cell(
    X: NDArray,
    w: NDArray,
    model_name: str,
    n_components: int,
    *,
    labels: NDArray | None = None,
    start: tuple[NDArray, NDArray, NDArray] | None = None,
    reg_covar: float,
    tol: float,
    rel_tol: float,
    max_iter: int,
    inner_max_iter: int = INNER_MAX_ITER,
    inner_tol: float = INNER_TOL,
    stop: NDArray | None = None,
) -> CellFit:
    """One grid cell: a start, EM to convergence, and the end as model selection needs it.

    The start is either the M-step of a partition ``labels`` (as :func:`start_from_labels`)
    or parameters ``start = (weights, means, covariances)`` in the model's storage; EM is
    :func:`fit_small`'s, stopped when the mean log-likelihood changes by less than
    ``tol + rel_tol (1/Σw + |mean|)`` (``rel_tol`` alone is mclust's relative test on the
    total); then one more E-step gives the log-likelihood, ICL's classification term and the
    MAP labels at the final parameters, and the fit is checked for mclust's NA conditions.
    One compiled call that releases the GIL; errors come back as ``status``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Checked, finite, C-contiguous float64 data.
    w : ndarray of shape (n_samples,)
        Row weights (ones for none).
    model_name : str
        One of mclust's 14 names.
    n_components : int
    labels, start : see above (exactly one).
    reg_covar, tol, rel_tol : float
    max_iter : int
    inner_max_iter : int, default=INNER_MAX_ITER
        Cap on the inner iterations of an iterative M-step (VEI, VEE, VEV, EVE, VVE): each
        warm-started inner iteration raises the M-step's objective, so a capped M-step is a
        generalised EM step, and the cap bounds what a nearly singular component costs.
    inner_tol : float, default=INNER_TOL
        Relative tolerance of those inner iterations (mclust's ``tol[2]`` is sqrt(eps)).
    stop : ndarray of shape (1,) of uint8, optional
        Checked before every EM iteration: once another thread sets it, the fit ends with
        status :data:`STOPPED` (compiled code cannot be interrupted otherwise).

    Returns
    -------
    fit : CellFit
    """
    code = _model_code(model_name)
    X, w = kernel_array(X), kernel_array(w)  # no copies from the grid (selection's arrays)
    n, d = X.shape
    K = int(n_components)
    diagonal = code < _N_DIAGONAL
    out_labels = np.zeros(n, dtype=np.intp)
    if labels is not None:
        out_labels[:] = labels
        weights = np.empty(K)
        means = np.empty((K, d))
        cov = np.empty((K, d) if diagonal else (K, d, d))
    else:
        weights, means, cov = (np.array(a, dtype=np.float64, order="C") for a in start)
    kernel = _cell_diag if diagonal else _cell_full
    out = kernel(X, w, float(w.sum()), code, K, out_labels, weights, means, cov,
                 labels is not None, float(reg_covar), float(tol), float(rel_tol),
                 int(max_iter), float(inner_tol), int(inner_max_iter),
                 np.zeros(1, dtype=np.uint8) if stop is None else stop)  # fmt: skip
    weights, means, cov, lbs, n_iter, converged, status, ll, icl, why, comp = out
    return CellFit(weights, means, cov, lbs, int(n_iter), bool(converged), int(status),
                   float(ll), float(icl), out_labels, int(why), int(comp))  # fmt: skip


def _drop_stale_cache() -> None:
    """Forget this file's compiled cache when gaussmix._mm_kernel is newer than it.

    numba keys a cached function on its own source file only: the MM loop compiled into
    fit_small's cached code would stay the old one after _mm_kernel.py changes (numba's
    documented limitation), and fit_small would silently part from run_em. Removing this
    file's cache indexes makes numba compile them again (and write new ones). Best effort: a
    numba without these attributes, or a read-only cache, leaves the cache as it is.
    """
    from gaussmix import _mm_kernel, _vecmath

    try:
        # the MM loop and the inlined exp/log are compiled into this file's functions
        kernel = max(os.stat(m.__file__).st_mtime for m in (_mm_kernel, _vecmath))
        for obj in list(globals().values()):
            cache_file = getattr(getattr(obj, "_cache", None), "_cache_file", None)
            index = getattr(cache_file, "_index_path", None)
            if index and os.path.isfile(index) and os.stat(index).st_mtime < kernel:
                os.remove(index)
    except (OSError, AttributeError, TypeError):  # pragma: no cover - best effort
        pass


_drop_stale_cache()
