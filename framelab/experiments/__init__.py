"""The experiments, each checking claims of the source notes, and the engine running them."""
