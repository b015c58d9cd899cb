"""Layer 3: serving engines that pull adapters from the registry over HTTP.

`registry.serving.vllm`: vLLM's LoRA resolver plugin (client side: the registry's HTTP
API through `registry.client`, never the server's code).
"""
