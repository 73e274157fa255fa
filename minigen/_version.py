"""The package version, one level below everything that reports it (the package, checkpoints)."""
__version__ = "0.1.0"
