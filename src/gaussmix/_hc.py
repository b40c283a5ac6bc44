"""Model-based agglomerative hierarchical clustering, the start of mclust's EM.

Fraley (1998), "Algorithms for model-based Gaussian hierarchical clustering", SIAM J. Sci.
Comput. 20(1): start from one group per row and repeatedly merge the two groups whose union
costs the least classification likelihood. One tree gives a starting partition for every
number of components K (cut it after ``n - K`` merges).

Two merge criteria, as mclust computes them:

``"VVV"`` (unconstrained covariances, mclust's default), with Fraley's regularisation: a group
of ``m`` rows with scatter matrix ``W`` costs

    m log(|W / m| + β (tr W + α) / m)        if m > d,
    m log(β (tr W + α) / m)                  if m <= d (|W| = 0 there),

with ``β = 1`` and ``α`` the total scatter of ``X / sqrt(n d)`` (mclust's constants), and a
merge costs the union's term minus the two groups' terms. Each group keeps ``sqrt(m)`` times
its mean, its scatter's trace and a triangular factor ``R`` with ``RᵀR = W``, updated by plane
rotations, so a merge's cost takes O(d³) and no covariance is ever formed.

``"EII"`` (Ward's criterion): a merge costs the increase of the within-group sum of squares,
updated by the Lance-Williams recurrence.

``use="SVD"`` (mclust's default ``hcUse``) runs the criterion on the data standardised and
rotated onto its principal axes, each axis scaled by ``1/sqrt(singular value)``; ``"VARS"``
runs it on the data as given.

Ties are broken as mclust breaks them (groups live in slots, a merged group takes the lower
slot and the last slot's group moves into the freed one, the pair costs are scanned column by
column and the last minimum wins), and the arithmetic follows the same order of operations
(no fused multiply-adds, sums left to right, R's long-double column means), so the merge costs
are mclust's to the last bit and the trees are mclust's merge for merge: on the six data sets
of the fixtures, and on random data in ``benchmarks/bench_hc.py``. The SVD comes from another
LAPACK than R's and differs from it in the last digits (1e-15), which has not changed a merge
so far. mclust 6.0.0 as built by Debian stores a merged group's scatter factor with every row
a copy of its first one (observed in its binary with a debugger; the Fortran sources we read
write each row), and costs that read an older group back use that factor:
``mclust_compat=True`` (the default) does the same, ``False`` keeps the exact factor.

Memory and time are O(n²) (the pair costs) and O(n² d³): above ``max_rows`` rows the tree is
built on a reproducible random subset, and the other rows join the group of highest posterior
under the Gaussian mixture that the subset's partition defines (mclust's answer too: it runs
EM on all rows from the subset's M-step).
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numba as nb
import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.utils import check_random_state

from gaussmix import _jit  # noqa: F401  (numba's vector width, before any kernel compiles)
from gaussmix._vecmath import unliteral

__all__ = [
    "HC_MODELS",
    "HC_USES",
    "HCTree",
    "hc_partitions",
    "hc_start_labels",
    "hc_transform",
    "hc_tree",
]

HC_MODELS = ("VVV", "EII")
HC_USES = ("SVD", "VARS")

# no fastmath: the merge order hangs on exact comparisons of costs, so every operation must
# round as written (no FMA contraction, no reassociation)
_JIT = {"cache": True, "nogil": True}

_FLMAX = 1.7976931348623157e308
_EPSMAX = 2.220446049250313e-16
_RTHALF = 0.7071067811865476  # sqrt(1/2), rounded
_SAFMIN = 2.0**-1022
_SAFMAX = 2.0**1023


# ------------------------------------------------------------------------------------------
# plane rotations and the triangular factor of a group's scatter


@nb.njit(**_JIT)
def _rotg(a, b):
    """Givens rotation zeroing ``b`` against ``a``: returns (r, c, s) with c a + s b = r."""
    anorm = abs(a)
    bnorm = abs(b)
    if bnorm == 0.0:
        return a, 1.0, 0.0
    if anorm == 0.0:
        return b, 0.0, 1.0
    scl = min(_SAFMAX, max(_SAFMIN, max(anorm, bnorm)))
    sigma = math.copysign(1.0, a) if anorm > bnorm else math.copysign(1.0, b)
    ta = a / scl
    tb = b / scl
    r = sigma * (scl * math.sqrt(ta * ta + tb * tb))
    return r, a / r, b / r


@nb.njit(**_JIT)
def _add_row(R, off, m, rows, v, vo):
    """Add the row ``v[vo:vo+m]`` to the factor ``R[off:, off:]`` (m columns) that holds
    ``rows`` rows: the new row goes below them and is rotated into upper-triangular form, or,
    when the factor is already square, is rotated away into it. Returns the new row count."""
    if rows < m:
        k = off + rows
        for c in range(m):
            R[k, off + c] = v[vo + c]
        for i in range(rows):
            ii = off + i
            r, cs, sn = _rotg(R[ii, ii], R[k, ii])
            R[ii, ii] = r
            R[k, ii] = 0.0
            for c in range(ii + 1, off + m):
                x = R[ii, c]
                y = R[k, c]
                R[ii, c] = cs * x + sn * y
                R[k, c] = cs * y - sn * x
        return rows + 1
    for i in range(m):
        ii = off + i
        r, cs, sn = _rotg(R[ii, ii], v[vo + i])
        R[ii, ii] = r
        for c in range(i + 1, m):
            x = R[ii, off + c]
            y = v[vo + c]
            R[ii, off + c] = cs * x + sn * y
            v[vo + c] = cs * y - sn * x
    return rows


@nb.njit(**_JIT)
def _term(m, p, R, s, trace, alpha, beta):
    """A group's cost: ``m log(|W/m| + β(tr W + α)/m)``; R is W's factor, s = 1/sqrt(m)."""
    if m <= p:
        return m * math.log(beta * (trace + alpha) / m)
    if trace == 0.0:
        return m * math.log((alpha * beta) / m)
    detlog = 0.0
    for k in range(p):
        q = R[k, k] * s
        if q == 0.0:
            return m * math.log(beta * (trace + alpha) / m)
        detlog = detlog + math.log(abs(q))
    detlog = 2.0 * detlog
    if detlog <= 0.0:
        val = math.log(math.exp(detlog) + beta * (trace + alpha) / m)
    else:
        val = math.log(1.0 + math.exp(-detlog) * (beta * (trace + alpha) / m)) + detlog
    return m * val


@nb.njit(**_JIT)
def _dot(v):
    acc = 0.0
    for k in range(v.shape[0]):
        acc = acc + v[k] * v[k]
    return acc


@nb.njit(**_JIT)
def _load(U, R, rows, p):
    for i in range(rows):
        for c in range(i, p):
            U[i, c] = R[i, c]


@nb.njit(**_JIT)
def _union(a, b, size, S, trace, R, Rb, U, v):
    """Factor (in U), trace and the scale factors of the union of groups a and b.

    ``b``'s factor (``Rb``) is the base and ``a``'s rows are rotated into it, then the between-group
    vector ``v = sqrt(m_b/m) s_a - sqrt(m_a/m) s_b`` (``s`` = sqrt(size) x mean).
    Returns (trace, sqrt(m_a/m), sqrt(m_b/m)); U holds min(m - 1, d) rows.
    """
    p = S.shape[1]
    na = size[a]
    nb_ = size[b]
    n = na + nb_
    if na == 1 and nb_ == 1:
        for k in range(p):
            v[k] = (S[a, k] - S[b, k]) * _RTHALF
        tr = _dot(v)
        for c in range(p):
            U[0, c] = v[c]
        return tr, _RTHALF, _RTHALF
    qn = 1.0 / n
    qa = na * qn
    qb = nb_ * qn
    sa = math.sqrt(qa)
    sb = math.sqrt(qb)
    if nb_ == 1:
        # rotating a's rows into an empty factor would only copy them
        _load(U, R[a], min(na - 1, p), p)
    else:
        _load(U, Rb, min(nb_ - 1, p), p)
        for t in range(min(na - 1, p)):
            # a's t-th row starts at column t: it updates the trailing block only, which
            # holds min(m_b - 1, d - t) rows
            for c in range(t, p):
                v[c] = R[a, t, c]
            _add_row(U, t, p - t, min(nb_ - 1, p - t), v, t)
    for k in range(p):
        v[k] = S[a, k] * sb + (-sa) * S[b, k]
    dd = _dot(v)
    if na > 1 and nb_ > 1:
        tr = (trace[a] + trace[b]) + dd
    elif na > 1:
        tr = trace[a] + dd
    else:
        tr = trace[b] + dd
    # unliteral: the constant 0s would compile _add_row once more, for Literal[int](0)
    _add_row(U, unliteral(0), p, min(n - 2, p), v, unliteral(0))
    return tr, sa, sb


# ------------------------------------------------------------------------------------------
# the pair costs: a packed strict upper triangle, column j holding pairs (0..j-1, j), with the
# minimum of each column (last row on ties) so the global argmin is O(slots) per merge


@nb.njit(**_JIT)
def _col(j):
    return (j * (j - 1)) // 2


@nb.njit(**_JIT)
def _rescan(D, j, cval, cidx):
    o = _col(j)
    best = D[o]
    arg = 0
    for i in range(1, j):
        x = D[o + i]
        if x <= best:
            best = x
            arg = i
    cval[j] = best
    cidx[j] = arg


@nb.njit(**_JIT)
def _set(D, i, j, x, cval, cidx):
    """D[i, j] = x, keeping column j's minimum (last row on ties)."""
    D[_col(j) + i] = x
    if x < cval[j] or (x == cval[j] and i >= cidx[j]):
        cval[j] = x
        cidx[j] = i
    elif i == cidx[j]:
        _rescan(D, j, cval, cidx)


@nb.njit(**_JIT)
def _argmin(lg, cval, cidx):
    best = cval[1]
    jb = 1
    for j in range(2, lg):
        if cval[j] <= best:
            best = cval[j]
            jb = j
    return cidx[jb], jb, best


@nb.njit(**_JIT)
def _swap_last(D, j, last, cval, cidx):
    """Slot ``last``'s pair costs move to slot ``j`` and j's to ``last`` (the Ward swap)."""
    oj = _col(j)
    ol = _col(last)
    for k in range(j):
        t = D[oj + k]
        D[oj + k] = D[ol + k]
        D[ol + k] = t
    for m in range(j + 1, last):
        om = _col(m)
        t = D[om + j]
        D[om + j] = D[ol + m]
        D[ol + m] = t
        x = D[om + j]
        if x < cval[m] or (x == cval[m] and j >= cidx[m]):
            cval[m] = x
            cidx[m] = j
        elif j == cidx[m]:
            _rescan(D, m, cval, cidx)


# ------------------------------------------------------------------------------------------
# the two criteria


@nb.njit(**_JIT)
def _tree_vvv(Z, alpha, beta, compat, merges, crit):
    n, p = Z.shape
    S = Z.copy()
    size = np.ones(n, dtype=np.int64)
    trace = np.zeros(n)
    term = np.full(n, math.log(beta * alpha))
    R = np.zeros((n, p, p))
    gid = np.arange(n)
    D = np.empty(max(1, (n * (n - 1)) // 2))
    cval = np.empty(n)
    cidx = np.zeros(n, dtype=np.int64)
    U = np.zeros((p, p))
    keep = np.zeros((p, p))
    best_u = np.zeros((p, p))
    v = np.empty(p)
    ablog = math.log(beta * alpha)
    for j in range(1, n):
        o = _col(j)
        for i in range(j):
            for k in range(p):
                v[k] = (S[i, k] - S[j, k]) * _RTHALF
            tr = _dot(v)
            D[o + i] = 2.0 * math.log(beta * (tr + alpha) / 2.0) - (ablog + ablog)
        _rescan(D, j, cval, cidx)
    lg = n
    iopt, jopt, dopt = _argmin(lg, cval, cidx)
    # every group is a singleton here: the union's term is computed directly
    trop, sio, sjo = _union(iopt, jopt, size, S, trace, R, R[jopt], keep, v)
    tmop = 2.0 * math.log(beta * (trop + alpha) / 2.0)
    ltr = ltm = lsa = lsb = 0.0
    for step in range(n - 1):
        a = gid[iopt]
        b = gid[jopt]
        merges[step, 0] = min(a, b)
        merges[step, 1] = max(a, b)
        crit[step] = dopt
        nopt = size[iopt] + size[jopt]
        for k in range(p):
            v[k] = S[iopt, k] * sio + sjo * S[jopt, k]
        last = lg - 1
        if jopt != last:
            _swap_last(D, jopt, last, cval, cidx)
            for k in range(p):
                S[jopt, k] = S[last, k]
            size[jopt] = size[last]
            trace[jopt] = trace[last]
            term[jopt] = term[last]
            R[jopt] = R[last]
            gid[jopt] = gid[last]
        iold = iopt
        gid[iold] = min(a, b)
        for k in range(p):
            S[iold, k] = v[k]
        size[iold] = nopt
        trace[iold] = trop
        term[iold] = tmop
        R[iold] = 0.0
        for i in range(min(nopt - 1, p)):
            for c in range(i, p):
                # compat: mclust 6.0.0 as built stores every row as a copy of the first
                R[iold, i, c] = keep[0, c] if compat else keep[i, c]
        lg -= 1
        if lg == 1:
            break
        # costs of merging the new group with every other; the last minimum among them is
        # remembered with its factor (mclust reuses it when that pair is merged next)
        lopt = _FLMAX
        lj = -1
        for j in range(lg):
            if j == iold:
                continue
            # the new group's factor is the one just computed (``keep``), not its stored copy
            tr, sa, sb = _union(j, iold, size, S, trace, R, keep, U, v)
            m = size[j] + size[iold]
            trm = _term(m, p, U, math.sqrt(1.0 / m), tr, alpha, beta)
            dij = trm - (term[iold] + term[j])
            if j < iold:
                D[_col(iold) + j] = dij
            else:
                _set(D, iold, j, dij, cval, cidx)
            if dij <= lopt:
                lopt = dij
                lj = j
                ltr = tr
                ltm = trm
                lsa = sa
                lsb = sb
                for i in range(p):
                    for c in range(p):
                        best_u[i, c] = U[i, c]
        if iold >= 1:
            _rescan(D, iold, cval, cidx)
        if jopt < lg and jopt != iold:
            _rescan(D, jopt, cval, cidx)
        if lg == 2:
            iopt, jopt, dopt = 0, 1, D[0]
        else:
            iopt, jopt, dopt = _argmin(lg, cval, cidx)
        if iopt == iold or jopt == iold:
            # the pair was just costed: take its factor and terms as they were computed
            trop = ltr
            tmop = ltm
            if lj < iold:
                sio, sjo = lsa, lsb
            else:
                sio, sjo = lsb, lsa
            for i in range(p):
                for c in range(p):
                    keep[i, c] = best_u[i, c]
        else:
            keep[:, :] = 0.0
            trop, sio, sjo = _union(iopt, jopt, size, S, trace, R, R[jopt], keep, v)
            tmop = dopt + (term[iopt] + term[jopt])
    return merges


@nb.njit(**_JIT)
def _tree_eii(X, merges, crit):
    n, p = X.shape
    size = np.ones(n, dtype=np.int64)
    gid = np.arange(n)
    D = np.empty(max(1, (n * (n - 1)) // 2))
    cval = np.empty(n)
    cidx = np.zeros(n, dtype=np.int64)
    half = math.sqrt(1.0 / 2.0)
    for j in range(1, n):
        o = _col(j)
        for i in range(j):
            acc = 0.0
            for k in range(p):
                t = X[i, k] * half + (-half) * X[j, k]
                acc = acc + t * t
            D[o + i] = acc
        _rescan(D, j, cval, cidx)
    lg = n
    iopt, jopt, dopt = _argmin(lg, cval, cidx)
    for step in range(n - 1):
        a = gid[iopt]
        b = gid[jopt]
        merges[step, 0] = min(a, b)
        merges[step, 1] = max(a, b)
        crit[step] = dopt
        ni = size[iopt]
        nj = size[jopt]
        nij = ni + nj
        size[iopt] = nij
        last = lg - 1
        if jopt != last:
            _swap_last(D, jopt, last, cval, cidx)
            size[jopt] = size[last]
            gid[jopt] = gid[last]
        gid[iopt] = min(a, b)
        iold = iopt
        lg -= 1
        if lg == 1:
            break
        si = float(ni)
        sj = float(nj)
        sij = float(nij)
        ol = _col(last)
        # Lance-Williams: the union's distance to k from the parts' distances to k
        for j in range(lg):
            if j == iold:
                continue
            rj = float(size[j])
            if j < iold:
                dik = D[_col(iold) + j]
            else:
                dik = D[_col(j) + iold]
            djk = D[ol + j]
            x = (rj + si) * dik + (rj + sj) * djk
            x = (x - rj * dopt) / (rj + sij)
            if j < iold:
                D[_col(iold) + j] = x
            else:
                _set(D, iold, j, x, cval, cidx)
        if iold >= 1:
            _rescan(D, iold, cval, cidx)
        if jopt < lg and jopt != iold:
            _rescan(D, jopt, cval, cidx)
        if lg == 2:
            iopt, jopt, dopt = 0, 1, D[0]
        else:
            iopt, jopt, dopt = _argmin(lg, cval, cidx)
    return merges


# ------------------------------------------------------------------------------------------
# the data transform, with R's order of operations


def _seq_sum_ld(values: NDArray) -> np.longdouble:
    """Left-to-right sum in extended precision (R accumulates sums and means in long double)."""
    return np.cumsum(values.astype(np.longdouble))[-1]


def _trace_scatter(X: NDArray) -> float:
    """Total within scatter of X (sum of squared deviations from the column means), in the
    order mclust accumulates it: means from rows scaled by 1/sqrt(n)."""
    n, p = X.shape
    fac = 1.0 / math.sqrt(float(n))
    u = np.zeros(p)
    for i in range(n):
        u = u + fac * X[i]
    ss = 0.0
    for j in range(p):
        col = X[:, j] + (-fac) * u[j]
        acc = 0.0
        for x in col * col:
            acc = acc + float(x)
        ss = ss + acc
    return ss


def hc_transform(X: ArrayLike, use: str = "SVD") -> NDArray:
    """The data the merges run on.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    use : {"SVD", "VARS"}, default="SVD"
        ``"VARS"``: X as given. ``"SVD"`` (mclust's ``hcUse`` default): each column centred and
        divided by its standard deviation (columns that are then not finite, i.e. constant,
        are dropped), rotated onto the right singular vectors V of that matrix and each axis
        divided by the square root of its singular value: ``Z = X_s V D^(-1/2)`` (directions
        whose singular value is zero to rounding are dropped).

    Returns
    -------
    Z : ndarray of shape (n_samples, n_kept_features), float64
    """
    if use not in HC_USES:
        raise ValueError(f"use must be one of {list(HC_USES)}, got {use!r}")
    X = np.asarray(X, dtype=np.float64)
    if use == "VARS":
        return np.ascontiguousarray(X)
    n, d = X.shape
    cols = []
    for j in range(d):
        col = X[:, j]
        mean = float(_seq_sum_ld(col) / np.longdouble(n))
        c = col - mean
        sd = math.sqrt(float(_seq_sum_ld(c * c)) / max(1, n - 1))
        with np.errstate(divide="ignore", invalid="ignore"):
            c = c / sd
        if np.all(np.isfinite(c)):
            cols.append(c)
    if not cols:
        raise ValueError("use='SVD' needs a feature that is not constant")
    Xs = np.column_stack(cols)
    _, sv, vt = np.linalg.svd(Xs, full_matrices=False)
    # directions of (numerically) zero variance would be divided by zero: they are dropped
    # (mclust would produce infinities there); full-rank data keep all min(n, d) of them
    k = int(np.count_nonzero(sv > sv[0] * max(Xs.shape) * np.finfo(np.float64).eps))
    if k == 0:
        raise ValueError("use='SVD' needs a feature that is not constant")
    V = vt[:k].T
    # one column at a time, summing over features in order (as a reference dgemm does)
    Z = np.zeros((n, k))
    for j in range(k):
        acc = np.zeros(n)
        for col in range(Xs.shape[1]):
            acc = acc + Xs[:, col] * V[col, j]
        Z[:, j] = acc * (1.0 / math.sqrt(float(sv[j])))
    return Z


# ------------------------------------------------------------------------------------------
# public API


@dataclass(frozen=True, eq=False)
class HCTree:
    """A model-based hierarchical clustering tree.

    Attributes
    ----------
    merges : ndarray of shape (n_rows - 1, 2)
        Merge ``s`` joins the groups labelled ``merges[s, 0] < merges[s, 1]`` (a group's label
        is the lowest row, among the tree's rows, that it holds) into ``merges[s, 0]``:
        mclust's ``hc`` pairs, 0-based.
    criterion : ndarray of shape (n_rows - 1,)
        Cost of each merge (change of the classification criterion).
    rows : ndarray of shape (n_rows,) or None
        The rows of X the tree was built on (sorted), or None when it used every row.
    n_samples : int
        Rows of X.
    model, use : str
        Merge criterion and data transform.
    """

    merges: NDArray
    criterion: NDArray
    rows: NDArray | None
    n_samples: int
    model: str
    use: str
    _X: NDArray = field(repr=False)

    @property
    def n_rows(self) -> int:
        """Rows the tree clustered."""
        return self.merges.shape[0] + 1

    def tree_partition(self, n_clusters: int) -> NDArray:
        """Partition of the tree's rows into ``n_clusters`` groups.

        Parameters
        ----------
        n_clusters : int
            From 1 to :attr:`n_rows`.

        Returns
        -------
        labels : ndarray of shape (n_rows,)
            0 .. n_clusters-1, numbered by first appearance (mclust's ``hclass`` minus one).
        """
        return self.tree_partitions([n_clusters])[0]

    def tree_partitions(self, n_clusters: Sequence[int]) -> list[NDArray]:
        """:meth:`tree_partition` for several numbers of groups, in one pass over the merges."""
        ks = [_check_k(k, self.n_rows) for k in n_clusters]
        m = self.n_rows
        parent = np.arange(m)
        out: dict[int, NDArray] = {}
        wanted = sorted(set(ks), reverse=True)
        done = 0
        for k in wanted:
            # after n - k merges, k groups remain
            for s in range(done, m - k):
                parent[self.merges[s, 1]] = self.merges[s, 0]
            done = max(done, m - k)
            out[k] = _first_appearance(_roots(parent))
        return [out[k] for k in ks]

    def partition(self, n_clusters: int, *, covariance_type: str = "full") -> NDArray:
        """Partition of all ``n_samples`` rows into ``n_clusters`` groups.

        Without a subset this is :meth:`tree_partition`. With one, the subset's groups define
        a Gaussian mixture (weights, means and ``covariance_type`` covariances from their
        M-step) and every row joins the group of highest posterior probability.

        Parameters
        ----------
        n_clusters : int
        covariance_type : str, default="full"
            Covariance model of the groups' Gaussians (only used with a subset).

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        return self.partitions([n_clusters], covariance_type=covariance_type)[0]

    def partitions(
        self, n_clusters: Sequence[int], *, covariance_type: str = "full"
    ) -> list[NDArray]:
        """:meth:`partition` for several numbers of groups."""
        parts = self.tree_partitions(n_clusters)
        if self.rows is None:
            return parts
        return [_extend(self._X, self.rows, lab, covariance_type) for lab in parts]


def _check_k(k, n_rows: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"n_clusters must be an integer, got {k!r}")
    if not 1 <= k <= n_rows:
        raise ValueError(
            f"n_clusters must be between 1 and the {n_rows} rows the tree clustered, got {k}"
        )
    return int(k)


def _roots(parent: NDArray) -> NDArray:
    # merges always attach the higher label to a lower one, so one pass from the left
    # resolves every chain
    root = parent.copy()
    for i in range(root.shape[0]):
        root[i] = root[root[i]]
    return root


def _first_appearance(labels: NDArray) -> NDArray:
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(first.shape[0], dtype=np.intp)
    rank[np.argsort(first, kind="stable")] = np.arange(first.shape[0])
    return rank[inverse]


def _extend(X: NDArray, rows: NDArray, labels: NDArray, covariance_type: str) -> NDArray:
    """Labels of every row: max posterior under the subset partition's M-step."""
    from gaussmix._covariance import get_model
    from gaussmix._init import _from_labels

    K = int(labels.max()) + 1
    model = get_model(covariance_type)
    params = _from_labels(X[rows], None, labels, K, model, 1e-6)
    out = np.empty(X.shape[0], dtype=np.intp)
    step = 65536
    for s in range(0, X.shape[0], step):
        out[s : s + step] = np.argmax(params.log_joint(X[s : s + step]), axis=1)
    # the tree's own rows keep their tree label
    out[rows] = labels
    return _first_appearance(out)


def hc_tree(
    X: ArrayLike,
    *,
    model: str = "VVV",
    use: str = "SVD",
    max_rows: int = 2000,
    random_state: int | np.random.RandomState | None = None,
    mclust_compat: bool = True,
) -> HCTree:
    """Model-based agglomerative hierarchical clustering of the rows of X.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Finite values; at least two rows.
    model : {"VVV", "EII"}, default="VVV"
        Merge criterion: mclust's regularised unconstrained-covariance criterion, or Ward's
        sum of squares.
    use : {"SVD", "VARS"}, default="SVD"
        Data transform before merging (see :func:`hc_transform`).
    max_rows : int, default=2000
        Above this many rows the tree is built on ``max_rows`` rows drawn without replacement
        (O(max_rows²) memory: 16 MB of pair costs at 2000).
    random_state : int, RandomState instance or None
        Draws the subset (only used above ``max_rows``).
    mclust_compat : bool, default=True
        ``"VVV"`` only. mclust 6.0.0 (as built by Debian's r-cran-mclust, the fixtures'
        oracle) keeps a merged group's scatter factor exact while it is the newest group, but
        stores every row of it as a copy of its first row, so costs that read an older group
        back from storage use that altered factor. True reproduces this, so that the tree, and
        the starting partitions, are mclust's; False uses the exact criterion throughout.

    Returns
    -------
    tree : HCTree
    """
    if model not in HC_MODELS:
        raise ValueError(f"model must be one of {list(HC_MODELS)}, got {model!r}")
    if use not in HC_USES:
        raise ValueError(f"use must be one of {list(HC_USES)}, got {use!r}")
    if isinstance(max_rows, bool) or not isinstance(max_rows, (int, np.integer)) or max_rows < 2:
        raise ValueError(f"max_rows must be an integer >= 2, got {max_rows!r}")
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 2 or X.shape[1] < 1:
        raise ValueError(f"X must be 2-D with at least 2 rows and 1 column, got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError("X must be finite (no NaN or infinity) for hierarchical clustering")
    n = X.shape[0]
    rows = None
    Xt = X
    if n > max_rows:
        rng = check_random_state(random_state)
        rows = np.sort(rng.choice(n, size=int(max_rows), replace=False))
        Xt = X[rows]
    Z = np.ascontiguousarray(hc_transform(Xt, use))
    m = Z.shape[0]
    merges = np.zeros((m - 1, 2), dtype=np.int64)
    crit = np.zeros(m - 1)
    if model == "VVV":
        alpha = max(_trace_scatter(Z / math.sqrt(float(m * Z.shape[1]))), _EPSMAX)
        _tree_vvv(Z, alpha, 1.0, bool(mclust_compat), merges, crit)
    else:
        _tree_eii(Z, merges, crit)
    return HCTree(
        merges=merges.astype(np.intp),
        criterion=crit,
        rows=rows,
        n_samples=n,
        model=model,
        use=use,
        _X=X,
    )


def hc_partitions(
    X: ArrayLike,
    n_clusters: Sequence[int],
    *,
    sample_weight: ArrayLike | None = None,
    model: str = "VVV",
    use: str = "SVD",
    max_rows: int = 2000,
    random_state: int | np.random.RandomState | None = None,
    covariance_type: str = "full",
) -> list[NDArray]:
    """Starting partitions for several numbers of components from one tree.

    A model-selection grid calls this once and starts every K from its partition.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    n_clusters : sequence of int
    sample_weight : array-like of shape (n_samples,), optional
        Only rows of positive weight are clustered (weights do not enter the merge
        criterion); rows of weight zero get label -1.
    model, use, max_rows, random_state :
        As in :func:`hc_tree`.
    covariance_type : str, default="full"
        As in :meth:`HCTree.partition`.

    Returns
    -------
    partitions : list of ndarray of shape (n_samples,)
        One per entry of ``n_clusters``.
    """
    X = np.asarray(X, dtype=np.float64)
    keep = _positive_rows(X, sample_weight)
    tree = hc_tree(
        X if keep is None else X[keep],
        model=model,
        use=use,
        max_rows=max_rows,
        random_state=random_state,
    )
    parts = tree.partitions(n_clusters, covariance_type=covariance_type)
    if keep is None:
        return parts
    out = []
    for lab in parts:
        full = np.full(X.shape[0], -1, dtype=np.intp)
        full[keep] = lab
        out.append(full)
    return out


def _positive_rows(X: NDArray, sample_weight) -> NDArray | None:
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.shape != (X.shape[0],):
        raise ValueError(f"sample_weight must have shape ({X.shape[0]},), got {w.shape}")
    keep = w > 0
    return None if keep.all() else keep


# the last few trees, keyed by the data's bytes and the tree's settings: a grid over K (or
# n_init restarts) with one random_state builds the tree once
_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 2


def _cached_tree(X: NDArray, model: str, use: str, max_rows: int, seed) -> HCTree:
    Xc = np.ascontiguousarray(X, dtype=np.float64)
    digest = hashlib.blake2b(Xc.view(np.uint8).reshape(-1), digest_size=16).hexdigest()
    key = (Xc.shape, digest, model, use, max_rows, seed)
    tree = _CACHE.get(key)
    if tree is None:
        tree = hc_tree(Xc, model=model, use=use, max_rows=max_rows, random_state=seed)
        _CACHE[key] = tree
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(key)
    return tree


def hc_start_labels(
    X: NDArray,
    sample_weight: NDArray | None,
    n_clusters: int,
    random_state: np.random.RandomState,
    *,
    model: str = "VVV",
    use: str = "SVD",
    max_rows: int = 2000,
) -> tuple[NDArray | None, NDArray]:
    """The hc starting partition of ``init_params="hc"``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Finite values.
    sample_weight : ndarray of shape (n_samples,) or None
        Rows of weight zero are left out of the tree (weights do not enter the criterion).
    n_clusters : int
    random_state : numpy.random.RandomState
        Draws the subset's seed, once, and only above ``max_rows`` rows.
    model, use, max_rows :
        As in :func:`hc_tree`.

    Returns
    -------
    keep : ndarray of shape (n_samples,), bool, or None
        Rows the labels are for (None: all).
    labels : ndarray
        0 .. n_clusters-1 for the kept rows.
    """
    keep = _positive_rows(X, sample_weight)
    Xk = X if keep is None else X[keep]
    if Xk.shape[0] < max(2, n_clusters):
        raise ValueError(
            f"init_params='hc' needs at least max(2, n_components) = {max(2, n_clusters)} rows "
            f"of positive weight, got {Xk.shape[0]}"
        )
    seed = int(random_state.randint(0, 2**31 - 1)) if Xk.shape[0] > max_rows else None
    tree = _cached_tree(Xk, model, use, max_rows, seed)
    return keep, tree.partition(n_clusters)
