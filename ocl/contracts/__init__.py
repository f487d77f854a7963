"""The contracts every layer shares, below all of them: the batch (:mod:`ocl.contracts.batch`:
keys, shapes, dtypes) and the model output (:mod:`ocl.contracts.output`: :class:`ModelOutput`
and its ``extras`` keys). They import nothing else from ``ocl``."""
