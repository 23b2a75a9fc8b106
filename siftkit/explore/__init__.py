"""Notebooks' helpers: parameters, embedding statistics, plots."""
