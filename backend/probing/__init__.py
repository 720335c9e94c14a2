"""Probing: the property table, labels, streamed probe statistics, ridge probes, metrics, emergence.

Data flow: labels (estimators on the final image) + activations -> :class:`~.stats.ProbeStats` ->
:func:`~.ridge.fit` -> :class:`~.ridge.Probes` -> per-step maps -> :mod:`.metrics` -> :mod:`.emergence`.
"""
