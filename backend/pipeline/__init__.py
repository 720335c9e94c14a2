"""The pipeline: load a Stable-Diffusion-family model (:mod:`.loading`), record what its UNet computes
(:mod:`.recorder`, :mod:`.layers`), generate with recording (:mod:`.generate`) and fill the run store
(:mod:`.runner`). :mod:`.fixtures` builds small random-init pipelines for tests and benchmarks.
"""
