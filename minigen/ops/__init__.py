"""Differentiable operations, grouped by kind; ``minigen.functional`` is their public face."""
