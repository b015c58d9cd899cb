"""Layer 1: safetensors I/O and validation, model manifests, and the BitDelta and LoRA codecs."""
