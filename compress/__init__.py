"""Layer 1: the codecs, pure (files or tensors in, files or tensors out; no database, no HTTP).

- `compress.tensorio`: safetensors models on disk: read, write, validate, manifests;
- `compress.bitdelta`: 1-bit deltas (ΔW ≈ α ⊙ sign(ΔW)): compress, load, apply, merge, verify;
- `compress.lora`: low-rank factors (ΔW ≈ B·A) in the PEFT format: extract, check;
- shared by both codecs: `compress.errors`, `compress.targets` (which modules, their kinds
  and layers) and `compress.progress`.

Callers import from a subpackage's top (`from compress.bitdelta import merge_bitdelta`),
not from the modules inside it.
"""
