"""Serving the registry's adapters: engines that load a base once and many adapters over it."""
