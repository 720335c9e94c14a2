"""The toyworld: procedural scenes with exact labels and the grammar that describes them (:mod:`.scenes`),
the bundle's architecture (:mod:`.models`), its training (:mod:`.train`) and its figures on held-out data
(:mod:`.evaluate`). The trained bundle itself lives in :mod:`ldm_explore.backend.bundles.toyworld`.
"""

# training stages in order, and the target steps of those that take steps (``toyworld train --steps``)
STAGES = ("data", "vae", "estimators", "unet", "decoder", "classifier", "export")
DEFAULT_STEPS = {"vae": 700, "estimators": 600, "classifier": 600, "unet": 20000, "decoder": 1500}
