"""Datasets, the batch contract and Lightning data modules."""
