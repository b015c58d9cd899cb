"""Layer 3: serving what the registry holds, talking to it over HTTP only.

`registry.serving.engine`: deltahub's own multi-tenant engine (one base, many BitDelta
deltas, one multi-tenant kernel call per layer). `registry.serving.vllm`: vLLM's LoRA
resolver plugin. Neither imports the server's code (docs/architecture.md).
"""
