"""Layer 1: the codecs, pure (files or tensors in, files or tensors out; no database, no HTTP).

Subpackages: `tensorio` (safetensors I/O, validation, manifests), `bitdelta` (1-bit deltas),
`lora` (PEFT low-rank factors), `modeling` and `quality` (models, data, gain kept); shared:
`errors`, `targets`, `progress`. Import from a subpackage's top, not the modules inside it.
See docs/codecs.md.
"""
