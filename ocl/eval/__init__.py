"""Evaluations that run on frozen features rather than on a trained method's slots."""
