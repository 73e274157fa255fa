"""GaussianMixture.for_data: the component count the command line fits when none is given."""
import numpy as np

from minigen.density.mixture import GaussianMixture


def _three_clusters(n=600, rng=0):
    rng = np.random.default_rng(rng)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    return centres[rng.integers(3, size=n)] + rng.normal(size=(n, 2))


def test_bic_picks_the_number_of_well_separated_clusters():
    assert GaussianMixture.for_data(_three_clusters()).n_components == 3


def test_a_given_count_and_parameters_pass_through():
    model = GaussianMixture.for_data(_three_clusters(), n_components=5, covariance_type="diag")
    assert (model.n_components, model.covariance_type, model.random_state) == (5, "diag", 0)


def test_counts_with_more_parameters_than_rows_are_not_tried():
    # 64 dimensions, full covariance: 2,144 parameters per component, so 100 rows allow K = 1 only
    X = np.random.default_rng(1).normal(size=(100, 64))
    assert GaussianMixture.for_data(X).n_components == 1
