"""The explorer's engine, without any UI: a session over a bundle, its prompts, probes and run store
(:mod:`.session`), one run analysed for display (:mod:`.analysis`) and exported (:mod:`.export`).
It does not import the batch experiment: what both need lives in :mod:`ldm_explore.backend.probing`.
"""
