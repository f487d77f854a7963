"""Run a trained model on any video: masks over time, overlays, and the metrics of one clip.

- :mod:`ocl.predict.model`: rebuild a model from its checkpoint; run a video chunk by chunk with
  the slots carried over (:class:`~ocl.predict.model.SlotTracker`).
- :mod:`ocl.predict.writers`: where the model's view lies in a frame; the overlay mp4 and the
  palette PNGs of slot ids.
- :mod:`ocl.predict.video`: ``predict.py``'s loop over a video file, in bounded memory.
- :mod:`ocl.predict.clips`: what ``notebooks/explore_slots.ipynb`` looks at: one clip, its masks, its metrics.
"""
