"""vLLM pulls LoRA adapters from the registry: a LoRA resolver plugin that follows aliases.

`plugin.py` is the one module that imports vLLM (the entry point `vllm.general_plugins`
-> `deltahub`); everything it uses lives beside it without vLLM, so it runs and is
tested in any Python that has `deltahub`: `settings.py` (environment), `rules.py`
(which names and adapters vLLM can serve), `cache.py` (the content-addressed local
cache shared by vLLM processes), `source.py` (name -> registry -> cache) and
`follow.py` (moved aliases and deleted versions). docs/architecture.md, "Serving with
vLLM", has the design.
"""
