"""Classical density estimators: Gaussian KDE, Gaussian mixtures (with k-means), PCA/PPCA,
and density estimation in a PCA (or auto-encoder) code."""
from .kde import KDE
from .kmeans import KMeans, kmeans_plusplus
from .latent import LatentDensity
from .mixture import GaussianMixture
from .pca import PCA

__all__ = ["KDE", "GaussianMixture", "KMeans", "kmeans_plusplus", "PCA", "LatentDensity"]
