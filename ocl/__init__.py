"""ocl: a research training framework for video object-centric learning."""

__version__ = "0.1.0"
