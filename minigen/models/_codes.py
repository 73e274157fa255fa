"""``minigen.models._codes``: an import path for ``code_model`` (the shared base of the
auto-encoder family), re-exporting its names."""
from .code_model import CodeModel, batched, check_unit_interval, in_unit_interval, sigmoid

__all__ = ["CodeModel", "batched", "check_unit_interval", "in_unit_interval", "sigmoid"]
