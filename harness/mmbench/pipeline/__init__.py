"""The run as named steps: plan -> pools -> retrieve -> score -> write (:mod:`mmbench.pipeline.run`)."""
