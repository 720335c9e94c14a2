"""The batch experiment: generate, label, fit probes on train, choose on val, evaluate on test (:mod:`.engine`),
against baselines (:mod:`.baselines`), resumable (:mod:`.checkpoint`), over several processes
(:mod:`.distributed`), written up as a report folder (:mod:`.report`, scores as :mod:`.scores` records).
"""
