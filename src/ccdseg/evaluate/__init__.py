"""Scoring segmentations against simulated truth: per class and per cluster object."""
