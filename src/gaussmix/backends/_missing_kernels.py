"""numba kernels of the exact E-step with missing values (the compiled :mod:`gaussmix._missing`).

The same statistics as :meth:`gaussmix._missing.MissingRows.e_step` (the numpy reference), in
one pass over the rows held sorted by missingness pattern:

- per pattern and component, a Cholesky factor ``L`` of ``Σ_oo``, ``L⁻¹``,
  ``T = L⁻¹ Σ_om``, the regression ``Σ_oo⁻¹ Σ_om = L⁻ᵀ T`` and the conditional covariance
  ``Σ_mm - Tᵀ T``, computed in scalar loops (microseconds at small d) each time a work item
  starts a pattern;
- per tile of up to ``TILE`` rows of one pattern, held transposed (rows innermost, so that
  the loops over rows vectorise, as in the cpu engine's fused kernel): the whitened residuals
  ``L⁻¹ (x_o - μ_o)`` (a triangular product) of every component, the log-sum-exp with the cpu
  engine's polynomial ``exp``, then, per component with a responsibility in the tile that is
  not an exact zero (log-ratio below -600), the completed rows (observed entries and
  conditional means, centred on the shift) and their first and second moments (upper
  triangle);
- per work item, the conditional covariances weighted by its summed responsibilities.

Rows are cut into *work items* (at most ``ITEM_ROWS`` rows of one pattern) and the items into
a number of contiguous *groups* fixed by the data; threads take groups, each group has its own
slot of statistics, slots are added in group order: results do not depend on the threads.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from gaussmix import _jit  # noqa: F401  (numba's vector width, before any kernel compiles)
from gaussmix._gaussian import LOG_2PI
from gaussmix._stats import SuffStats
from gaussmix.backends._cpu_kernels import exp_nonpos

__all__ = ["e_step"]

_JIT = {"cache": True, "nogil": True, "fastmath": {"contract", "reassoc", "nsz", "arcp"}}
ITEM_ROWS = 4096
TILE = 256  # rows per transposed tile
_MAX_GROUPS = 64
_SLOT_ELEMENTS = 1 << 21  # float64 elements of all group slots together (16 MiB)
_CUT = -600.0  # exp below this is 0 in float64 (or a slow denormal)


@nb.njit(**_JIT)
def _factors(full, means, log_w, missing, obs, mis, M, bias, const, C, L, Linv, T):
    """Fill the per-component quantities of one pattern; return p, or -1 if Σ_oo is not PD."""
    K, d = means.shape
    p = 0
    q = 0
    for j in range(d):
        if missing[j]:
            mis[q] = j
            q += 1
        else:
            obs[p] = j
            p += 1
    for k in range(K):
        for i in range(p):
            for j in range(i + 1):
                s = full[k, obs[i], obs[j]]
                for t in range(j):
                    s -= L[i, t] * L[j, t]
                if i == j:
                    if not s > 0.0:
                        return -1
                    L[i, i] = math.sqrt(s)
                else:
                    L[i, j] = s / L[j, j]
        for j in range(p):
            for i in range(p):
                Linv[i, j] = 0.0
            Linv[j, j] = 1.0 / L[j, j]
            for i in range(j + 1, p):
                s = 0.0
                for t in range(j, i):
                    s -= L[i, t] * Linv[t, j]
                Linv[i, j] = s / L[i, i]
        for a in range(p):
            for c in range(p):
                M[k, a, c] = Linv[c, a]
        for i in range(p):
            for b in range(q):
                s = 0.0
                for t in range(i + 1):
                    s += Linv[i, t] * full[k, obs[t], mis[b]]
                T[i, b] = s
        for a in range(p):
            for b in range(q):
                s = 0.0
                for i in range(a, p):
                    s += Linv[i, a] * T[i, b]
                M[k, a, p + b] = s
        for c in range(d):
            s = 0.0
            for a in range(p):
                s -= means[k, obs[a]] * M[k, a, c]
            bias[k, c] = s
        for b in range(q):
            bias[k, p + b] += means[k, mis[b]]
        log_det = 0.0
        for i in range(p):
            log_det += 2.0 * math.log(L[i, i])
        const[k] = log_w[k] - 0.5 * (p * LOG_2PI + log_det)
        for b1 in range(q):
            for b2 in range(q):
                s = full[k, mis[b1], mis[b2]]
                for i in range(p):
                    s -= T[i, b1] * T[i, b2]
                C[k, b1, b2] = s
    return p


@nb.njit(**_JIT)
def _exp_rows(a, b, m, out):
    """``out[:m] = exp(a[:m] - b[:m])`` (0 below the cut-off): the one call site of
    ``exp_nonpos`` here; two inlined copies in one function made numba warn
    (``NumbaIRAssumptionWarning``) on a cold compile."""
    for n in range(m):
        out[n] = exp_nonpos(a[n] - b[n], _CUT)


@nb.njit(**_JIT)
def estep_groups(
    X, w, weighted, items, group_bounds, patterns, full, means, log_w, shift, full_moment,
    first, step, nk, sx, sxx, ll, wsum,
):  # fmt: skip
    """Statistics of groups ``first, first + step, ...`` into their slots (see module doc)."""
    K, d = means.shape
    obs = np.empty(d, np.int64)
    mis = np.empty(d, np.int64)
    M = np.empty((K, d, d))
    bias = np.empty((K, d))
    const = np.empty(K)
    C = np.empty((K, d, d))
    L = np.empty((d, d))
    Linv = np.empty((d, d))
    T = np.empty((d, d))
    xo = np.empty((d, TILE))
    xt = np.empty((d, TILE))
    z = np.empty(TILE)
    maha = np.empty(TILE)
    top = np.empty(TILE)
    tot = np.empty(TILE)
    lse = np.empty(TILE)
    r = np.empty(TILE)
    rx = np.empty(TILE)
    lj = np.empty((K, TILE))
    rs = np.empty(K)
    G = group_bounds.shape[0] - 1
    for g in range(first, G, step):
        nk[g] = 0.0
        sx[g] = 0.0
        sxx[g] = 0.0
        ll[g] = 0.0
        wsum[g] = 0.0
        current = -1
        p = 0
        for it in range(group_bounds[g], group_bounds[g + 1]):
            pat = items[it, 0]
            if pat != current:
                p = _factors(full, means, log_w, patterns[pat], obs, mis, M, bias, const, C,
                             L, Linv, T)  # fmt: skip
                if p < 0:
                    return pat
                current = pat
            q = d - p
            rs[:] = 0.0
            # tiles of rows, transposed (rows innermost, so that the loops over rows vectorise)
            for t0 in range(items[it, 1], items[it, 2], TILE):
                t1 = min(t0 + TILE, items[it, 2])
                m = t1 - t0
                for a in range(p):
                    for n in range(m):
                        xo[a, n] = X[t0 + n, obs[a]]
                for n in range(m):
                    top[n] = -np.inf
                for k in range(K):
                    for n in range(m):
                        maha[n] = 0.0
                    for c in range(p):  # z_c = Σ_{a<=c} (L⁻¹)_ca x_a - (L⁻¹ μ)_c
                        for n in range(m):
                            z[n] = bias[k, c]
                        for a in range(c + 1):
                            f = M[k, a, c]
                            for n in range(m):
                                z[n] += f * xo[a, n]
                        for n in range(m):
                            maha[n] += z[n] * z[n]
                    for n in range(m):
                        lj[k, n] = const[k] - 0.5 * maha[n]
                        top[n] = max(top[n], lj[k, n])
                for n in range(m):
                    tot[n] = 0.0
                for k in range(K):
                    _exp_rows(lj[k], top, m, z)
                    for n in range(m):
                        tot[n] += z[n]
                for n in range(m):
                    lse[n] = top[n] + math.log(tot[n])
                    wn = w[t0 + n] if weighted else 1.0
                    ll[g] += wn * lse[n]
                    wsum[g] += wn
                for k in range(K):
                    any_r = False
                    _exp_rows(lj[k], lse, m, r)
                    for n in range(m):
                        wn = w[t0 + n] if weighted else 1.0
                        r[n] = wn * r[n]
                        any_r = any_r or r[n] != 0.0
                    if not any_r:
                        continue  # no row of the tile belongs to k: nothing to add
                    sr = 0.0
                    for n in range(m):
                        sr += r[n]
                    rs[k] += sr
                    nk[g, k] += sr
                    # the completed rows, centred: observed entries, then conditional means
                    for a in range(p):
                        i = obs[a]
                        sh = shift[k, i]
                        for n in range(m):
                            xt[i, n] = xo[a, n] - sh
                    for b in range(q):
                        i = mis[b]
                        for n in range(m):
                            xt[i, n] = bias[k, p + b] - shift[k, i]
                        for a in range(p):
                            f = M[k, a, p + b]
                            for n in range(m):
                                xt[i, n] += f * xo[a, n]
                    for i in range(d):
                        acc = 0.0
                        for n in range(m):
                            rx[n] = r[n] * xt[i, n]
                            acc += rx[n]
                        sx[g, k, i] += acc
                        if full_moment:
                            for j in range(i, d):
                                acc = 0.0
                                for n in range(m):
                                    acc += rx[n] * xt[j, n]
                                sxx[g, k, i, j] += acc
                        else:
                            acc = 0.0
                            for n in range(m):
                                acc += rx[n] * xt[i, n]
                            sxx[g, k, 0, i] += acc
            # the conditional covariances, weighted by the item's responsibilities
            for k in range(K):
                if rs[k] == 0.0:
                    continue
                for b1 in range(q):
                    if full_moment:
                        for b2 in range(b1, q):  # mis is increasing: the upper triangle
                            sxx[g, k, mis[b1], mis[b2]] += rs[k] * C[k, b1, b2]
                    else:
                        sxx[g, k, 0, mis[b1]] += rs[k] * C[k, b1, b1]
    return -1


def _plan(rows, n_components: int, full_moment: bool):
    """Work items and groups of ``rows`` (cached: they depend on the data only)."""
    key = (n_components, full_moment)
    cached = getattr(rows, "_plan", None)
    if cached is not None and cached[0] == key:
        return cached[1], cached[2]
    items = []
    for i, pattern in enumerate(rows.patterns):
        if pattern.all():
            continue
        for s in range(rows.bounds[i], rows.bounds[i + 1], ITEM_ROWS):
            items.append((i, s, min(s + ITEM_ROWS, rows.bounds[i + 1])))
    items = np.array(items, dtype=np.int64).reshape(-1, 3)
    d = rows.n_features
    slot = n_components * (d * d if full_moment else d) + n_components * (d + 1) + 2
    G = max(1, min(_MAX_GROUPS, len(items), _SLOT_ELEMENTS // slot))
    # contiguous groups of about equal row counts
    ends = np.cumsum(items[:, 2] - items[:, 1])
    cuts = np.searchsorted(ends, np.linspace(0, ends[-1] if len(ends) else 0, G + 1)[1:-1])
    bounds = np.unique(np.concatenate([[0], cuts, [len(items)]])).astype(np.int64)
    rows._plan = (key, items, bounds)
    return items, bounds


def e_step(rows, params, shift, run_threads, n_threads: int) -> SuffStats:
    """Compiled :meth:`gaussmix._missing.MissingRows.e_step`.

    Parameters
    ----------
    rows : MissingRows
    params : MixtureParams
    shift : ndarray of shape (n_components, n_features), float64
    run_threads : callable
        ``run_threads(task, n)`` runs ``task(first, step)`` for first in range(n).
    n_threads : int
    """
    K, d = params.means.shape
    full_moment = params.model.moment == "full"
    items, bounds = _plan(rows, K, full_moment)
    G = bounds.size - 1
    full = np.ascontiguousarray(
        np.stack([params.model.full_matrix(params.covariances, k, d) for k in range(K)])
    )
    with np.errstate(divide="ignore"):
        log_w = np.maximum(np.log(params.weights), -1e300)
    nk = np.empty((G, K))
    sx = np.empty((G, K, d))
    sxx = np.empty((G, K, d if full_moment else 1, d))
    ll = np.empty(G)
    wsum = np.empty(G)
    weighted = rows.w_sorted is not None
    w = rows.w_sorted if weighted else np.empty(0)
    failed = []

    def task(first, step):
        bad = estep_groups(rows.X_sorted, w, weighted, items, bounds, rows.patterns, full,
                           params.means, log_w, shift, full_moment, first, step, nk, sx, sxx,
                           ll, wsum)  # fmt: skip
        if bad >= 0:
            failed.append(bad)

    if G:
        run_threads(task, max(1, min(n_threads, G)))
    if failed:
        raise np.linalg.LinAlgError("a covariance is not positive definite on observed entries")
    sxx_t = sxx.sum(axis=0)
    if full_moment:
        sxx_t = np.triu(sxx_t) + np.swapaxes(np.triu(sxx_t, 1), 1, 2)
    else:
        sxx_t = sxx_t[:, 0, :]
    return SuffStats(
        shift, nk.sum(axis=0), sx.sum(axis=0), sxx_t, float(ll.sum()), float(wsum.sum()),
        rows.n_samples,
    )  # fmt: skip
