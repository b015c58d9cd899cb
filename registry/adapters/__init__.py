"""Adapters (LoRA, BitDelta): pushed or compressed, immutable versions, movable aliases."""
