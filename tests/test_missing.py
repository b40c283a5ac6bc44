"""Missing values (NaN): exact EM on the observed entries, marginal densities, imputation.

The oracle is a plain row-by-row implementation of the textbook equations (Ghahramani &
Jordan 1994), written here with scipy's densities and linear solves, sharing nothing with
``gaussmix._missing`` but the M-step of the covariance models (which missing values do not
change: they only change the expected statistics fed to it).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import linalg
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn.exceptions import ConvergenceWarning

from gaussmix import GaussianMixture
from gaussmix._covariance import COVARIANCE_MODELS, get_model
from gaussmix._missing import MissingRows
from gaussmix._params import MixtureParams
from gaussmix._stats import SuffStats, e_step_chunk, m_step

MODELS = sorted(COVARIANCE_MODELS)


# ---------------------------------------------------------------------------- the oracle
def ref_log_joint(x, weights, means, covs):
    """log φ_k + log N(x_o; μ_k,o, Σ_k,oo) of one row (scipy density of the observed part)."""
    o = ~np.isnan(x)
    out = np.log(weights).copy()
    if o.any():
        for k in range(len(weights)):
            out[k] += multivariate_normal.logpdf(x[o], means[k][o], covs[k][np.ix_(o, o)])
    return out


def ref_conditional(x, mean, cov):
    """(completed row, conditional covariance embedded in d × d) of one row, one component."""
    o = ~np.isnan(x)
    m = ~o
    xhat = x.copy()
    C = np.zeros((x.size, x.size))
    if m.any():
        S_oo = cov[np.ix_(o, o)]
        S_mo = cov[np.ix_(m, o)]
        xhat[m] = mean[m] + S_mo @ linalg.solve(S_oo, x[o] - mean[o], assume_a="pos")
        C[np.ix_(m, m)] = cov[np.ix_(m, m)] - S_mo @ linalg.solve(S_oo, S_mo.T, assume_a="pos")
    return xhat, C


def ref_e_step(X, w, weights, means, covs):
    """Expected raw moments ``Σ w r``, ``Σ w r x̂``, ``Σ w r (x̂ x̂ᵀ + C)`` and Σ w log p(x_o)."""
    K, d = means.shape
    nk, s1, s2, ll, wsum = np.zeros(K), np.zeros((K, d)), np.zeros((K, d, d)), 0.0, 0.0
    for n, x in enumerate(X):
        if np.isnan(x).all():
            continue  # no observed value: left out of the fit
        lj = ref_log_joint(x, weights, means, covs)
        lp = logsumexp(lj)
        r = np.exp(lj - lp)
        wn = 1.0 if w is None else w[n]
        ll += wn * lp
        wsum += wn
        for k in range(K):
            xhat, C = ref_conditional(x, means[k], covs[k])
            nk[k] += wn * r[k]
            s1[k] += wn * r[k] * xhat
            s2[k] += wn * r[k] * (np.outer(xhat, xhat) + C)
    return nk, s1, s2, ll, wsum


def ref_em(X, start: MixtureParams, model, n_iter, reg_covar, w=None):
    """``n_iter`` EM iterations: oracle E-step, then the covariance model's M-step."""
    params, bounds = start, []
    K, d = start.means.shape
    for _ in range(n_iter):
        covs = [params.model.full_matrix(params.covariances, k, d) for k in range(K)]
        nk, s1, s2, ll, wsum = ref_e_step(X, w, params.weights, params.means, covs)
        sxx = s2 if model.moment == "full" else np.diagonal(s2, axis1=1, axis2=2).copy()
        stats = SuffStats(np.zeros((K, d)), nk, s1, sxx, ll, wsum, len(X))
        bounds.append(ll / wsum)
        params = m_step(stats, model, reg_covar, params)
    return params, bounds


def observed_loglik(X, weights, means, covs):
    """Σ_n log Σ_k φ_k N(x_n,o; μ_k,o, Σ_k,oo), straight from scipy."""
    return sum(logsumexp(ref_log_joint(x, weights, means, covs)) for x in X)


# ---------------------------------------------------------------------------- data
def clustered(n, d=3, K=2, frac=0.2, seed=0, spread=5.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, spread, (K, d))
    A = rng.normal(0, 0.4, (K, d, d)) + np.eye(d)
    z = rng.integers(0, K, n)
    X = centres[z] + np.einsum("nij,nj->ni", A[z], rng.normal(size=(n, d)))
    full = X.copy()
    hide = rng.random(X.shape) < frac
    hide[hide.all(axis=1), 0] = False  # rows with nothing observed only where a test puts them
    X[hide] = np.nan
    return X, full, z


def start_params(X, K, seed=1):
    """A start shared by the oracle and the estimator (full covariances, any model)."""
    rng = np.random.default_rng(seed)
    filled = np.where(np.isnan(X), np.nanmean(X, axis=0), X)
    means = filled[rng.choice(len(X), K, replace=False)]
    cov = np.cov(filled.T) + 0.1 * np.eye(X.shape[1])
    covs = np.stack([cov * (1 + 0.2 * k) for k in range(K)])
    weights = np.full(K, 1.0 / K)
    return MixtureParams.from_covariances(weights, means, covs, "full")


def fit_from(X, start, model_name, n_iter, engine="numpy", reg_covar=1e-6, **kw):
    gm = GaussianMixture(
        start.n_components,
        covariance_type=model_name,
        max_iter=n_iter,
        tol=0.0,
        reg_covar=reg_covar,
        weights_init=start.weights,
        means_init=start.means,
        precisions_init=np.linalg.inv(start.covariances),
        engine=engine,
        **kw,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return gm.fit(X)


# ---------------------------------------------------------------------------- EM = oracle
@pytest.mark.parametrize("name", MODELS)
def test_ten_iterations_equal_the_row_by_row_oracle(name):
    X, _, _ = clustered(48, d=3, K=2, frac=0.25, seed=3)
    X[0, :] = np.nan  # a row with nothing observed is left out
    X[1, 1:] = np.nan
    model = get_model(name)
    start = start_params(X, 2)
    expected, bounds = ref_em(X, start, model, 10, 1e-6)
    with pytest.warns(UserWarning, match="1 rows of X have no observed value"):
        gm = fit_from(X, start, name, 10)
    np.testing.assert_allclose(gm.weights_, expected.weights, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(gm.means_, expected.means, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(gm.covariances_, expected.covariances, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(gm.lower_bounds_, bounds, rtol=1e-8)


@pytest.mark.parametrize("name", ["full", "diag", "VEV", "EEI"])
def test_weighted_fit_equals_the_oracle_and_repeated_rows(name):
    X, _, _ = clustered(40, d=3, K=2, frac=0.3, seed=5)
    w = np.random.default_rng(0).integers(0, 4, len(X)).astype(float)
    start = start_params(X, 2)
    expected, _ = ref_em(X, start, get_model(name), 10, 1e-6, w=w * len(w) / w.sum())
    gm = fit_from(X, start, name, 10)
    gm.set_params(warm_start=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(X, sample_weight=w)
    np.testing.assert_allclose(gm.means_, expected.means, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(gm.covariances_, expected.covariances, rtol=1e-6, atol=1e-9)
    # integer weights mean repeated rows
    rep = fit_from(np.repeat(X, w.astype(int), axis=0), start, name, 10)
    np.testing.assert_allclose(gm.means_, rep.means_, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(gm.covariances_, rep.covariances_, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", MODELS)
def test_pattern_kernel_on_complete_rows_equals_the_reference_kernel(name):
    _, full, _ = clustered(60, d=4, K=3, frac=0.0, seed=2)
    start = start_params(full, 3)
    model = get_model(name)
    params = m_step(e_step_chunk(full, None, start, start.means), model, 1e-6, start)
    shift = params.means + 0.3
    a = e_step_chunk(full, None, params, shift)
    b = MissingRows(full).e_step(params, shift)
    for field in ("nk", "sx", "sxx"):
        np.testing.assert_allclose(getattr(b, field), getattr(a, field), rtol=1e-10, atol=1e-9)
    assert b.log_likelihood == pytest.approx(a.log_likelihood, rel=1e-12)


def test_without_nan_the_fit_is_unchanged():
    from sklearn.mixture import GaussianMixture as SkGM

    _, full, _ = clustered(300, d=3, K=2, seed=4)
    ours = GaussianMixture(2, random_state=0, engine="numpy", tol=1e-6).fit(full)
    theirs = SkGM(2, random_state=0, tol=1e-6).fit(full)
    np.testing.assert_allclose(np.sort(ours.means_, 0), np.sort(theirs.means_, 0), rtol=1e-6)
    assert ours.lower_bound_ == pytest.approx(theirs.lower_bound_, rel=1e-8)


# reg_covar = 0: the regularised M-step is not an exact maximiser, and it moves the bound by
# ~1e-9 near convergence. VVE is left out: its MM M-step can lower the expected complete-data
# log-likelihood Q on these expected statistics (measured: ΔQ = -1.5e-3 after 45 iterations; the
# oracle E-step then shows the same decrease), which is the M-step's matter, not the E-step's.
@pytest.mark.parametrize("name", ["full", "tied", "diag", "spherical", "EEE", "VVI"])
def test_lower_bound_never_decreases(name):
    X, _, _ = clustered(400, d=4, K=3, frac=0.3, seed=7)
    gm = GaussianMixture(
        3, covariance_type=name, tol=1e-10, max_iter=60, random_state=0, reg_covar=0.0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm.fit(X)
    assert np.all(np.diff(gm.lower_bounds_) >= -1e-10 * np.abs(gm.lower_bounds_[1:]))


def test_converged_fit_is_a_stationary_point_of_the_observed_likelihood():
    X, _, _ = clustered(100, d=3, K=2, frac=0.25, seed=11)
    gm = GaussianMixture(2, tol=1e-13, max_iter=3000, reg_covar=0.0, random_state=0)
    gm.fit(X)
    assert gm.converged_
    w, mu, S = gm.weights_, gm.means_, gm.covariances_

    def f(w_, mu_, S_):
        return observed_loglik(X, w_, mu_, S_)

    best = f(w, mu, S)
    h = 1e-5
    for k in range(2):
        for j in range(3):
            e = np.zeros_like(mu)
            e[k, j] = h
            grad = (f(w, mu + e, S) - f(w, mu - e, S)) / (2 * h)
            assert abs(grad) < 1e-4, (k, j, grad)
    rng = np.random.default_rng(0)
    for _ in range(5):
        dS = rng.normal(0, 1e-3, S.shape)
        dS = dS + np.swapaxes(dS, 1, 2)
        dw = rng.normal(0, 1e-3, 2)
        w2 = np.abs(w + dw - dw.mean())
        assert f(w2 / w2.sum(), mu + rng.normal(0, 1e-3, mu.shape), S + dS) < best


# ---------------------------------------------------------------------------- densities
@pytest.mark.parametrize("name", ["full", "tied", "diag", "spherical", "EVE"])
def test_score_samples_and_predict_proba_equal_the_direct_computation(name):
    X, _, _ = clustered(120, d=4, K=3, frac=0.3, seed=9)
    X[0] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = GaussianMixture(3, covariance_type=name, random_state=0, max_iter=20).fit(X)
    params = gm._fitted_params()
    covs = [params.model.full_matrix(params.covariances, k, 4) for k in range(3)]
    lj = np.array([ref_log_joint(x, gm.weights_, gm.means_, covs) for x in X])
    np.testing.assert_allclose(gm.log_joint(X), lj, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gm.score_samples(X), logsumexp(lj, axis=1), rtol=1e-10, atol=1e-12)
    proba = np.exp(lj - logsumexp(lj, axis=1, keepdims=True))
    np.testing.assert_allclose(gm.predict_proba(X), proba, rtol=1e-8, atol=1e-12)
    np.testing.assert_array_equal(gm.predict(X), np.argmax(lj, axis=1))
    # no observed value: the posterior is the weights, the log-density 0
    np.testing.assert_allclose(gm.predict_proba(X[:1])[0], gm.weights_, rtol=1e-12)
    assert gm.score_samples(X[:1])[0] == pytest.approx(0.0, abs=1e-12)
    total = logsumexp(lj, axis=1).sum()
    n_par = gm._n_parameters()
    assert gm.bic(X) == pytest.approx(-2 * total + n_par * np.log(len(X)), rel=1e-10)
    assert gm.aic(X) == pytest.approx(-2 * total + 2 * n_par, rel=1e-10)
    lrm = np.sum(np.max(lj, axis=1) - logsumexp(lj, axis=1))
    assert gm.icl(X) == pytest.approx(gm.bic(X) - 2 * lrm, rel=1e-10)


# ---------------------------------------------------------------------------- imputation
def test_impute_mean_is_the_posterior_weighted_conditional_mean_and_beats_column_means():
    X, full, _ = clustered(600, d=4, K=3, frac=0.2, seed=13, spread=6.0)
    gm = GaussianMixture(3, random_state=0, n_init=2).fit(X)
    params = gm._fitted_params()
    covs = [params.model.full_matrix(params.covariances, k, 4) for k in range(3)]
    got = gm.impute(X)
    for n in range(0, 600, 7):
        x = X[n]
        lj = ref_log_joint(x, gm.weights_, gm.means_, covs)
        r = np.exp(lj - logsumexp(lj))
        expected = sum(r[k] * ref_conditional(x, gm.means_[k], covs[k])[0] for k in range(3))
        np.testing.assert_allclose(got[n], expected, rtol=1e-9, atol=1e-9)
    miss = np.isnan(X)
    np.testing.assert_array_equal(got[~miss], X[~miss])
    rmse = np.sqrt(np.mean((got[miss] - full[miss]) ** 2))
    col = np.where(miss, np.nanmean(X, axis=0), X)
    rmse_col = np.sqrt(np.mean((col[miss] - full[miss]) ** 2))
    assert rmse < 0.5 * rmse_col


def test_impute_sample_draws_from_the_conditional():
    X, _, _ = clustered(200, d=3, K=2, frac=0.2, seed=17)
    gm = GaussianMixture(2, random_state=0).fit(X)
    a = gm.impute(X, method="sample", random_state=1)
    b = gm.impute(X, method="sample", random_state=1)
    np.testing.assert_array_equal(a, b)
    miss = np.isnan(X)
    np.testing.assert_array_equal(a[~miss], X[~miss])
    assert not np.isnan(a).any()
    # one row, many draws: the mean and covariance of p(x_m | x_o) (a mixture)
    row = np.array([[X[~np.isnan(X[:, 0]), 0][0], np.nan, np.nan]])
    draws = gm.impute(np.repeat(row, 20000, axis=0), method="sample", random_state=2)[:, 1:]
    expected = gm.impute(row)[0, 1:]
    se = draws.std(axis=0) / np.sqrt(len(draws))
    assert np.all(np.abs(draws.mean(axis=0) - expected) < 5 * se)
    with pytest.raises(ValueError, match="method must be"):
        gm.impute(X, method="median")


# ---------------------------------------------------------------------------- estimator
def test_never_observed_feature_is_an_error_naming_it():
    X, _, _ = clustered(50, d=3, seed=1)
    X[:, 2] = np.nan
    with pytest.raises(ValueError, match="feature 2 of X is never observed"):
        GaussianMixture(2).fit(X)
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(X, columns=["a", "b", "height"])
    with pytest.raises(ValueError, match="feature 'height' \\(column 2\\)"):
        GaussianMixture(2).fit(df)


def test_infinity_is_still_refused():
    X, _, _ = clustered(50, d=3, seed=1)
    X[3, 1] = np.inf
    with pytest.raises(ValueError, match="(?i)infinity"):
        GaussianMixture(2).fit(X)


def test_allow_nan_tag():
    assert GaussianMixture().__sklearn_tags__().input_tags.allow_nan


@pytest.mark.parametrize("init", ["kmeans", "k-means++", "random", "random_from_data"])
def test_every_init_works_with_nan(init):
    X, _, _ = clustered(200, d=3, K=2, frac=0.3, seed=21)
    gm = GaussianMixture(2, init_params=init, random_state=0, max_iter=200).fit(X)
    assert np.all(np.isfinite(gm.means_)) and gm.converged_


def test_warm_start_continues_with_nan():
    X, _, _ = clustered(200, d=3, K=2, frac=0.3, seed=23)
    start = start_params(X, 2)
    ten = fit_from(X, start, "full", 10)
    five = fit_from(X, start, "full", 5)
    five.set_params(warm_start=True, max_iter=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        five.fit(X)
    np.testing.assert_allclose(five.means_, ten.means_, rtol=1e-10)


@pytest.mark.parametrize("name", ["full", "tied", "diag", "spherical", "VEV", "EEI"])
@pytest.mark.parametrize("weighted", [False, True])
def test_compiled_missing_kernel_equals_the_numpy_reference(name, weighted):
    pytest.importorskip("numba")
    from gaussmix.backends import _missing_kernels
    from gaussmix.backends.cpu import _run_threads

    X, full, _ = clustered(3000, d=4, K=3, frac=0.35, seed=47)
    X[:5] = np.nan
    X[5:9, 1:] = np.nan  # one observed entry
    rows = np.flatnonzero(np.isnan(X).any(axis=1))
    w = np.random.default_rng(1).uniform(0, 3, len(X)) if weighted else None
    missing = MissingRows(X, w, rows)
    start = start_params(full, 3)
    params = m_step(e_step_chunk(full, None, start, start.means), get_model(name), 1e-6, start)
    shift = params.means - 0.7
    a = missing.e_step(params, shift)
    for threads in (1, 3):
        b = _missing_kernels.e_step(missing, params, shift, _run_threads, threads)
        for field in ("nk", "sx", "sxx"):
            np.testing.assert_allclose(getattr(b, field), getattr(a, field), rtol=1e-11, atol=1e-9)
        assert b.log_likelihood == pytest.approx(a.log_likelihood, rel=1e-13)
        assert (b.weight_sum, b.n_samples) == pytest.approx((a.weight_sum, a.n_samples))


@pytest.mark.slow
def test_cpu_engine_equals_numpy_engine_with_nan():
    # enough complete rows for the compiled kernels (MIN_ROWS), plus rows with NaN
    X, _, _ = clustered(12000, d=5, K=3, frac=0.12, seed=29)
    start = start_params(X, 3)
    for name in ("full", "diag", "tied"):
        a = fit_from(X, start, name, 8, engine="numpy")
        b = fit_from(X, start, name, 8, engine="cpu")
        np.testing.assert_allclose(b.means_, a.means_, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(b.covariances_, a.covariances_, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(b.lower_bounds_, a.lower_bounds_, rtol=1e-11)


# ---------------------------------------------------------------------------- the imputer
def test_imputer_in_a_pipeline_beats_iterative_imputer_on_clustered_data():
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from gaussmix import GaussianMixtureImputer

    X, full, _ = clustered(600, d=4, K=3, frac=0.2, seed=31, spread=6.0)
    miss = np.isnan(X)
    ours = GaussianMixtureImputer(3, random_state=0, n_init=2).fit_transform(X)
    theirs = IterativeImputer(random_state=0, max_iter=20).fit_transform(X)

    def rmse(Z):
        return np.sqrt(np.mean((Z[miss] - full[miss]) ** 2))

    assert rmse(ours) < 0.8 * rmse(theirs)
    pipe = make_pipeline(GaussianMixtureImputer(3, random_state=0), StandardScaler()).fit(X)
    assert not np.isnan(pipe.transform(X)).any()
    imp = pipe[0]
    np.testing.assert_array_equal(imp.transform(X), imp.mixture_.impute(X))
    drawn = GaussianMixtureImputer(3, sample_posterior=True, random_state=0).fit(X)
    a, b = drawn.transform(X), drawn.transform(X)
    assert not np.array_equal(a[miss], b[miss])  # a new draw each time
    np.testing.assert_array_equal(a[~miss], X[~miss])


def test_imputer_keeps_feature_names():
    pd = pytest.importorskip("pandas")
    from gaussmix import GaussianMixtureImputer

    X, _, _ = clustered(100, d=3, seed=37)
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    imp = GaussianMixtureImputer(2, random_state=0).fit(df)
    assert list(imp.get_feature_names_out()) == ["a", "b", "c"]


def _imputer_checks():
    from sklearn.utils.estimator_checks import parametrize_with_checks

    from gaussmix.imputer import GaussianMixtureImputer

    return parametrize_with_checks([GaussianMixtureImputer(random_state=0)])


@_imputer_checks()
def test_imputer_passes_the_estimator_checks(estimator, check):
    check(estimator)


# ---------------------------------------------------------------------------- command line
def _cli(*args):
    from click.testing import CliRunner

    from gaussmix.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_impute_fills_empty_cells_like_the_estimator(tmp_path):
    X, _, _ = clustered(150, d=3, K=2, frac=0.15, seed=41)
    data = tmp_path / "d.csv"
    lines = ["a,b,c"] + [",".join("" if np.isnan(v) else repr(float(v)) for v in r) for r in X]
    data.write_text("\n".join(lines) + "\n")
    gm = GaussianMixture(2, random_state=0).fit(X)
    gm.save(tmp_path / "m.gmm")
    out = tmp_path / "out.csv"
    result = _cli("impute", tmp_path / "m.gmm", data, "-o", out)
    assert result.exit_code == 0, result.output
    got = np.loadtxt(out, delimiter=",", skiprows=1)
    assert out.read_text().splitlines()[0] == "a,b,c"
    np.testing.assert_allclose(got, gm.impute(X), rtol=1e-13)
    drawn = _cli("impute", tmp_path / "m.gmm", data, "--method", "sample", "--seed", "3")
    assert drawn.exit_code == 0
    rows = np.array([[float(v) for v in line.split(",")] for line in drawn.output.split()[1:]])
    miss = np.isnan(X)
    np.testing.assert_allclose(rows[~miss], X[~miss], rtol=1e-13)
    assert not np.isnan(rows).any()


def test_cli_impute_errors_leave_no_output(tmp_path):
    out = tmp_path / "out.csv"
    result = _cli("impute", tmp_path / "none.gmm", tmp_path / "none.csv", "-o", out)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "none.csv: no such file" in result.output
    X, _, _ = clustered(60, d=3, seed=43)
    GaussianMixture(2, random_state=0).fit(X).save(tmp_path / "m.gmm")
    data = tmp_path / "two.csv"
    data.write_text("a,b\n1,2\n3,\n")
    result = _cli("impute", tmp_path / "m.gmm", data, "-o", out)
    assert result.exit_code != 0 and "fitted on 3" in result.output
    assert not out.exists()


def test_start_rows_complete_rows_or_mean_filled():
    from gaussmix._missing import mean_fill, start_rows

    X, _, _ = clustered(200, d=3, frac=0.1, seed=53)
    complete = ~np.isnan(X).any(axis=1)
    X0, w0 = start_rows(X, None, 2)
    np.testing.assert_array_equal(X0, X[complete])
    assert w0 is None
    sparse, _, _ = clustered(200, d=6, frac=0.5, seed=53)  # about 2 % complete rows
    w = np.arange(200.0)
    X1, w1 = start_rows(sparse, w, 2)
    assert w1 is w and not np.isnan(X1).any()
    filled = mean_fill(sparse, w)
    np.testing.assert_array_equal(X1, filled)
    obs = ~np.isnan(sparse[:, 0])
    expected = np.sum(sparse[obs, 0] * w[obs]) / w[obs].sum()
    assert np.all(filled[~obs, 0] == pytest.approx(expected, rel=1e-12))


def test_fit_with_few_complete_rows_recovers_the_clusters():
    X, _, z = clustered(800, d=6, K=2, frac=0.5, seed=59, spread=8.0)
    assert np.count_nonzero(~np.isnan(X).any(axis=1)) < 160  # the mean-filled start
    gm = GaussianMixture(2, random_state=0, max_iter=300).fit(X)
    labels = gm.predict(X)
    agree = max(np.mean(labels == z), np.mean(labels != z))
    assert agree > 0.95


# ---------------------------------------------------------------------------- online EM, scale
def test_partial_fit_first_batch_with_nan_is_one_em_iteration():
    X, _, _ = clustered(300, d=3, K=2, frac=0.25, seed=61)
    start = start_params(X, 2)
    one = fit_from(X, start, "full", 1)
    online = GaussianMixture(
        2,
        weights_init=start.weights,
        means_init=start.means,
        precisions_init=np.linalg.inv(start.covariances),
    ).partial_fit(X)
    np.testing.assert_allclose(online.means_, one.means_, rtol=1e-12)
    np.testing.assert_allclose(online.covariances_, one.covariances_, rtol=1e-12)
    # a later batch may lack a feature entirely, and its empty rows are left out
    batch = X[:50].copy()
    batch[:, 1] = np.nan
    batch[0] = np.nan
    n_empty = int(np.isnan(batch).all(axis=1).sum())
    with pytest.warns(UserWarning, match=f"{n_empty} rows of the batch have no observed value"):
        online.partial_fit(batch)
    assert np.all(np.isfinite(online.covariances_)) and online.n_iter_ == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the error alone, no warning about left-out rows
        with pytest.raises(ValueError, match="every row of the batch is NaN"):
            online.partial_fit(np.full((4, 3), np.nan))
    first = X[:60].copy()
    first[:, 2] = np.nan
    with pytest.raises(ValueError, match="feature 2 of X is never observed"):
        GaussianMixture(2).partial_fit(first)


def test_scale_check_sees_past_nan():
    X, _, _ = clustered(50, d=3, frac=0.2, seed=67)
    X[3, 0] = np.nan
    X[4, 1] = 1e200
    with pytest.raises(ValueError, match="values up to 1e\\+200"):
        GaussianMixture(2).fit(X)


def test_readme_example_prints_what_the_readme_says(capsys):
    from pathlib import Path

    text = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = text.split("## Missing values", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    printed = section.split("prints", 1)[1].split("```\n", 1)[1].split("```", 1)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out == printed
