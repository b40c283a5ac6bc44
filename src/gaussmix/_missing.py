"""Missing values (NaN): exact EM on the observed entries, marginal densities, imputation.

For row ``n`` with observed block ``o`` and missing block ``m``, and component ``k``
(Ghahramani & Jordan 1994):

- the responsibilities use the marginal density of the observed entries,
  ``r_nk ∝ φ_k N(x_o; μ_k,o, Σ_k,oo)``;
- the missing entries are filled by their conditional mean
  ``x̂_nk,m = μ_k,m + Σ_k,mo Σ_k,oo⁻¹ (x_o - μ_k,o)``;
- the expected scatter gains the conditional covariance
  ``C_k = Σ_k,mm - Σ_k,mo Σ_k,oo⁻¹ Σ_k,om`` in its ``(m, m)`` block.

These are the expected first and second moments of the complete data given the observed data,
so they add to a :class:`~gaussmix._stats.SuffStats` like those of complete rows and every
covariance model's M-step applies unchanged; the log-likelihood summed is the observed-data
one, which EM never decreases.

Rows are grouped by missingness pattern. For one pattern, one Cholesky factor of each
``Σ_k,oo`` (all K in one batched call) gives a single matrix per component,
``M_k = [L_k⁻ᵀ | Σ_k,oo⁻¹ Σ_k,om]``, and one GEMM ``x_o [M_1 ... M_K]`` gives every row's whitened
residuals (hence its Mahalanobis term) and its K conditional means at once. Peak extra memory
is a block of ``(rows, K, d)`` float64 (about 8 MiB) and nothing of size N × K × d × d.
Complete rows never come here: executors send them to their usual kernels.

A row with no observed value has marginal density 1 (log 0): its posterior is the weights and
it carries no information, so the E-step leaves it out; a feature never observed cannot be
estimated (the estimator refuses it). Maths only, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from gaussmix._gaussian import LOG_2PI, logsumexp
from gaussmix._params import MixtureParams
from gaussmix._stats import SuffStats, e_step_chunk

__all__ = [
    "MissingRows",
    "drop_unobserved",
    "e_step_missing",
    "impute",
    "log_joint",
    "mean_fill",
    "split_missing",
    "start_rows",
]

# elements of one (rows, K, d) float64 block: 2**20 = 8 MiB
_BLOCK_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class _Pattern:
    """Per-component quantities of one missingness pattern under given parameters."""

    obs: NDArray  # observed feature indices, shape (p,)
    mis: NDArray  # missing feature indices, shape (q,)
    matrix: NDArray  # (p, K*d): [L_k⁻ᵀ | Σ_k,oo⁻¹ Σ_k,om] side by side over k
    bias: NDArray  # (K, d): the same map applied to -μ_k,o, plus μ_k,m on the last q columns
    const: NDArray  # (K,): log φ_k - (p log 2π + log det Σ_k,oo) / 2
    cond_cov: NDArray  # (K, q, q): Σ_k,mm - Σ_k,mo Σ_k,oo⁻¹ Σ_k,om

    def apply(self, X_obs: NDArray) -> tuple[NDArray, NDArray]:
        """``(log φ_k N(x_o; μ_k,o, Σ_k,oo), x̂_k,m)`` of shapes (n, K) and (n, K, q)."""
        K, d = self.bias.shape
        p = self.obs.size
        Y = (X_obs @ self.matrix).reshape(X_obs.shape[0], K, d)
        Y += self.bias
        maha = np.einsum("nkp,nkp->nk", Y[:, :, :p], Y[:, :, :p])
        return self.const - 0.5 * maha, Y[:, :, p:]


def _full_covariances(params: MixtureParams) -> NDArray:
    K, d = params.means.shape
    model = params.model
    return np.stack([model.full_matrix(params.covariances, k, d) for k in range(K)])


def _pattern(params: MixtureParams, full: NDArray, missing: NDArray) -> _Pattern:
    """Factors of one pattern (``missing``: boolean mask of shape (d,)) for all components."""
    K, d = params.means.shape
    obs = np.flatnonzero(~missing)
    mis = np.flatnonzero(missing)
    p = obs.size
    S_oo = full[:, obs][:, :, obs]
    S_om = full[:, obs][:, :, mis]
    L = np.linalg.cholesky(S_oo)  # a principal block of a positive-definite matrix
    eye = np.broadcast_to(np.eye(p), S_oo.shape)
    L_inv = np.linalg.solve(L, eye)
    # Σ_oo⁻¹ Σ_om = L⁻ᵀ (L⁻¹ Σ_om)
    regress = np.swapaxes(L_inv, 1, 2) @ (L_inv @ S_om)  # (K, p, q)
    M = np.concatenate([np.swapaxes(L_inv, 1, 2), regress], axis=2)  # (K, p, d)
    means = params.means
    bias = -np.einsum("kp,kpd->kd", means[:, obs], M)
    bias[:, p:] += means[:, mis]
    log_det = 2.0 * np.sum(np.log(np.diagonal(L, axis1=1, axis2=2)), axis=1)
    with np.errstate(divide="ignore"):
        const = np.log(params.weights) - 0.5 * (p * LOG_2PI + log_det)
    cond_cov = full[:, mis][:, :, mis] - np.swapaxes(S_om, 1, 2) @ regress
    return _Pattern(
        obs=obs,
        mis=mis,
        matrix=np.ascontiguousarray(M.transpose(1, 0, 2).reshape(p, K * d)),
        bias=bias,
        const=const,
        cond_cov=cond_cov,
    )


def _group(mask: NDArray) -> tuple[NDArray, NDArray, NDArray]:
    """Rows grouped by pattern: ``(order, bounds, patterns)``.

    ``order[bounds[i]:bounds[i+1]]`` are the rows whose missing mask is ``patterns[i]``.
    """
    packed = np.ascontiguousarray(np.packbits(mask, axis=1))
    keys = packed.view(np.dtype((np.void, packed.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    counts = np.bincount(inverse.ravel(), minlength=first.size)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return order, bounds, mask[first]


class MissingRows:
    """Rows with at least one NaN, grouped once by missingness pattern.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Rows that each contain NaN (complete rows work too, more slowly than the usual
        kernels); NaN marks a missing entry, every other entry must be finite.
    sample_weight : ndarray of shape (n_samples,) or None
    rows : ndarray of int, optional
        Take only these rows of ``X`` (and of the weights), copied once, in pattern order.

    Attributes
    ----------
    X_sorted : ndarray of shape (n_rows, n_features), float64
        The rows, pattern by pattern.
    w_sorted : ndarray of shape (n_rows,) or None
        Their weights.
    patterns : ndarray of bool, shape (n_distinct, n_features)
        The distinct missing masks.
    bounds : ndarray of int, shape (n_distinct + 1,)
        ``X_sorted[bounds[i]:bounds[i+1]]`` are the rows of ``patterns[i]``.
    n_samples : int
        Rows with at least one observed entry (those the E-step uses).
    n_empty : int
        Rows with no observed entry (left out of the E-step).
    n_patterns : int
        Distinct missingness patterns among the used rows.
    """

    def __init__(
        self, X: NDArray, sample_weight: NDArray | None = None, rows: NDArray | None = None
    ) -> None:
        mask = np.isnan(X if rows is None else X[rows])
        order, bounds, patterns = _group(mask)
        del mask
        self.n_features = X.shape[1]
        self._index = order  # positions in the rows given, pattern by pattern
        take = order if rows is None else rows[order]
        # rows stored sorted by pattern, one copy (float64: the arithmetic here is float64)
        self.X_sorted = np.asarray(X[take], dtype=np.float64)
        w = sample_weight
        self.w_sorted = None if w is None else np.asarray(w, dtype=np.float64)[take]
        self.bounds = bounds
        self.patterns = patterns
        empty = patterns.all(axis=1)
        self.n_empty = int(sum(bounds[i + 1] - bounds[i] for i in np.flatnonzero(empty)))
        self.n_samples = int(order.size) - self.n_empty
        self.n_patterns = int(np.count_nonzero(~empty))

    def _blocks(self, n_components: int, skip_empty: bool = True):
        """``(pattern_mask, slice into the sorted rows)`` of at most one block each."""
        size = max(64, _BLOCK_ELEMENTS // max(1, n_components * self.n_features))
        for i, pattern in enumerate(self.patterns):
            if skip_empty and pattern.all():
                continue
            for start in range(self.bounds[i], self.bounds[i + 1], size):
                yield i, slice(start, min(start + size, self.bounds[i + 1]))

    def _walk(self, params: MixtureParams, skip_empty: bool = True):
        """``(pattern, block slice, log joint, conditional means)`` for every block."""
        full = _full_covariances(params)
        current, pat = -1, None
        for i, block in self._blocks(params.n_components, skip_empty):
            if i != current:
                current, pat = i, _pattern(params, full, self.patterns[i])
            lj, xhat = pat.apply(self.X_sorted[block][:, pat.obs])
            yield pat, block, lj, xhat

    def e_step(self, params: MixtureParams, shift: NDArray) -> SuffStats:
        """Expected complete-data statistics of these rows under ``params``, around ``shift``.

        Parameters
        ----------
        params : MixtureParams
        shift : ndarray of shape (n_components, n_features)

        Returns
        -------
        stats : SuffStats
            ``log_likelihood`` is the observed-data log-likelihood; rows without observed
            entries count nowhere.
        """
        K, d = params.means.shape
        full_moment = params.model.moment == "full"
        out = SuffStats.zeros(np.asarray(shift, dtype=np.float64), params.model.moment)
        nk, sx, sxx = out.nk.copy(), out.sx.copy(), out.sxx.copy()
        ll, wsum = 0.0, 0.0
        shift = out.shift
        last, pending = None, np.zeros(K)

        def flush(pat):
            # conditional covariances once per pattern, weighted by its summed responsibilities
            m = pat.mis
            if full_moment:
                sxx[:, m[:, None], m[None, :]] += pending[:, None, None] * pat.cond_cov
            else:
                sxx[:, m] += pending[:, None] * np.diagonal(pat.cond_cov, axis1=1, axis2=2)

        for pat, block, lj, xhat in self._walk(params):
            if pat is not last:
                if last is not None:
                    flush(last)
                last, pending = pat, np.zeros(K)
            log_norm = logsumexp(lj, axis=1)
            r = np.exp(lj - log_norm[:, None])
            if self.w_sorted is None:
                ll += float(log_norm.sum())
                wsum += float(log_norm.shape[0])
            else:
                w = self.w_sorted[block]
                r *= w[:, None]
                ll += float(w @ log_norm)
                wsum += float(w.sum())
            rk = r.sum(axis=0)
            nk += rk
            pending += rk
            # the completed rows, centred per component: (K, n, d)
            filled = np.empty((K, r.shape[0], d))
            filled[:, :, pat.obs] = self.X_sorted[block][:, pat.obs][None, :, :]
            filled[:, :, pat.mis] = xhat.transpose(1, 0, 2)
            filled -= shift[:, None, :]
            weighted = filled * r.T[:, :, None]
            sx += weighted.sum(axis=1)
            if full_moment:
                sxx += np.matmul(weighted.transpose(0, 2, 1), filled)
            else:
                sxx += np.einsum("knd,knd->kd", weighted, filled)
        if last is not None:
            flush(last)
        return SuffStats(shift, nk, sx, sxx, ll, wsum, self.n_samples)

    def log_joint(self, params: MixtureParams) -> NDArray:
        """``log φ_k + log N(x_o; μ_k,o, Σ_k,oo)`` in the order the rows were given, (n, K)."""
        out = np.empty((self.X_sorted.shape[0], params.n_components))
        for _, block, lj, _ in self._walk(params, skip_empty=False):
            out[self._index[block]] = lj
        return out

    def impute(
        self,
        params: MixtureParams,
        method: Literal["mean", "sample"] = "mean",
        rng: np.random.RandomState | None = None,
    ) -> NDArray:
        """The rows with NaN replaced, in the order given (float64)."""
        out = np.empty_like(self.X_sorted)
        for pat, block, lj, xhat in self._walk(params, skip_empty=False):
            rows = self.X_sorted[block].copy()
            r = np.exp(lj - logsumexp(lj, axis=1)[:, None])
            if method == "mean":
                rows[:, pat.mis] = np.einsum("nk,nkq->nq", r, xhat)
            else:
                # z ~ p(z | x_o), then x_m ~ N(x̂_z,m, C_z)
                cum = np.cumsum(r, axis=1)
                u = rng.random_sample(r.shape[0]) * cum[:, -1]
                z = np.minimum((cum < u[:, None]).sum(axis=1), r.shape[1] - 1)
                noise = rng.standard_normal((r.shape[0], pat.mis.size))
                # a conditional covariance may be semidefinite in rounding: symmetric square root
                vals, vecs = np.linalg.eigh(pat.cond_cov)
                roots = vecs * np.sqrt(np.clip(vals, 0.0, None))[:, None, :]
                rows[:, pat.mis] = xhat[np.arange(r.shape[0]), z] + np.einsum(
                    "nij,nj->ni", roots[z], noise
                )
            out[self._index[block]] = rows
        return out


def split_missing(
    X: NDArray, sample_weight: NDArray | None
) -> tuple[NDArray, NDArray | None, MissingRows | None]:
    """Complete rows (and their weights), and the rows with NaN grouped for the E-step.

    Returns ``(X, sample_weight, None)`` unchanged when nothing is missing.
    """
    incomplete = np.isnan(X).any(axis=1)
    if not incomplete.any():
        return X, sample_weight, None
    complete = ~incomplete
    w = sample_weight
    missing = MissingRows(X, w, np.flatnonzero(incomplete))
    del incomplete
    return X[complete], None if w is None else w[complete], missing


def e_step_missing(
    X: NDArray, sample_weight: NDArray | None, params: MixtureParams, shift: NDArray
) -> SuffStats:
    """E-step of one chunk that may contain NaN (see :func:`gaussmix._stats.e_step_chunk`).

    Complete rows take the reference kernel; rows with NaN the pattern-grouped exact E-step.
    """
    Xc, wc, rows = split_missing(X, sample_weight)
    stats = e_step_chunk(Xc, wc, params, shift)
    return stats if rows is None else stats + rows.e_step(params, shift)


def log_joint(params: MixtureParams, X: NDArray) -> NDArray:
    """``log φ_k + log N(x_n,o; μ_k,o, Σ_k,oo)`` over the observed entries, (n, K) float64.

    A row with no observed entry gets ``log φ_k`` (its marginal density is 1).
    """
    incomplete = np.isnan(X).any(axis=1)
    out = np.empty((X.shape[0], params.n_components))
    complete = ~incomplete
    if complete.any():
        out[complete] = params.log_joint(X[complete])
    if incomplete.any():
        out[incomplete] = MissingRows(X[incomplete]).log_joint(params)
    return out


def impute(
    params: MixtureParams,
    X: NDArray,
    method: Literal["mean", "sample"] = "mean",
    rng: np.random.RandomState | None = None,
) -> NDArray:
    """``X`` with every NaN replaced under the mixture, float64.

    Parameters
    ----------
    params : MixtureParams
    X : ndarray of shape (n_samples, n_features)
    method : {"mean", "sample"}
        ``"mean"``: ``E[x_m | x_o] = Σ_k p(k | x_o) x̂_k,m``, the posterior-weighted conditional
        means. ``"sample"``: a draw from ``p(x_m | x_o)`` (component, then Gaussian), for
        multiple imputation.
    rng : numpy.random.RandomState, optional
        Needed for ``"sample"``.
    """
    out = np.array(X, dtype=np.float64)
    incomplete = np.isnan(out).any(axis=1)
    if incomplete.any():
        out[incomplete] = MissingRows(out[incomplete]).impute(params, method, rng)
    return out


def start_rows(
    X: NDArray, sample_weight: NDArray | None, n_components: int
) -> tuple[NDArray, NDArray | None]:
    """Rows without NaN for the initialisations (see :func:`gaussmix._init.initial_params`).

    The complete rows when there are at least ``max(n_rows / 5, 10 n_components)`` of them
    (with positive weight), else all rows filled by :func:`mean_fill`.
    """
    complete = ~np.isnan(X).any(axis=1)
    usable = complete if sample_weight is None else complete & (sample_weight > 0)
    if np.count_nonzero(usable) >= max(X.shape[0] / 5, 10 * n_components):
        return X[complete], None if sample_weight is None else sample_weight[complete]
    return mean_fill(X, sample_weight), sample_weight


def mean_fill(X: NDArray, sample_weight: NDArray | None = None) -> NDArray:
    """``X`` with NaN replaced by the (weighted) mean of the observed entries of their column.

    The starting point of the initialisations (k-means, random, ...) on incomplete data: every
    row takes part, and EM then treats the entries as missing again.
    """
    mask = np.isnan(X)
    if not mask.any():
        return X
    w = np.ones(X.shape[0]) if sample_weight is None else sample_weight
    obs_w = (~mask) * w[:, None]
    total = obs_w.sum(axis=0)
    sums = np.nansum(X * w[:, None], axis=0)
    means = np.where(total > 0, sums / np.where(total > 0, total, 1.0), 0.0)
    return np.where(mask, means.astype(X.dtype), X)


def drop_unobserved(
    X: NDArray, sample_weight: NDArray | None, feature_names=None, *, every_feature: bool = True
) -> tuple[NDArray, NDArray | None, int]:
    """Refuse a feature never observed; leave out rows with no observed value.

    ``every_feature=False`` skips the first rule (a later batch of online EM: the model
    already has every feature's parameters).

    Returns
    -------
    X, sample_weight : the rows kept (the inputs themselves when nothing is left out)
    n_empty : int
        Rows left out.

    Raises
    ------
    ValueError
        Naming the first feature whose every entry is NaN.
    """
    if not (X.size and np.isnan(np.min(X))):
        return X, sample_weight, 0
    mask = np.isnan(X)
    never = np.flatnonzero(mask.all(axis=0)) if every_feature else np.empty(0, np.intp)
    if never.size:
        j = int(never[0])
        name = f"'{feature_names[j]}' (column {j})" if feature_names is not None else f"{j}"
        raise ValueError(
            f"feature {name} of X is never observed (every entry is NaN; "
            f"{never.size} such feature(s)): its mean and variance cannot be estimated; "
            "drop the column"
        )
    empty = mask.all(axis=1)
    n_empty = int(np.count_nonzero(empty))
    if n_empty:
        keep = ~empty
        X = X[keep]
        sample_weight = None if sample_weight is None else sample_weight[keep]
    return X, sample_weight, n_empty
