"""Shared building blocks: encoders, initialisers, slot attention, predictors, decoders."""
