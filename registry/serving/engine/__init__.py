"""A multi-tenant engine: one base model, many BitDelta fine-tunes, one batch.

Each targeted linear layer holds the base weight once plus every resident tenant's packed
signs and α, and runs a batch that mixes tenants as one `kernels.bitdelta_linear_multi`
call; `deltahub engine` serves it behind an OpenAI-compatible HTTP API (app.py).
docs/architecture.md, "Serving engine", has the design.
"""
