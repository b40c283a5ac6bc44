"""scikit-learn's own estimator checks, run on every covariance type."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from gaussmix import GaussianMixture


@parametrize_with_checks(
    [
        GaussianMixture(covariance_type="full", engine="numpy"),
        GaussianMixture(covariance_type="diag", n_components=2),
        GaussianMixture(covariance_type="tied", n_components=2, init_params="k-means++"),
        GaussianMixture(covariance_type="spherical", n_components=3),
    ]
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
