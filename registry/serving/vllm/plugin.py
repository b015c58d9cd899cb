"""The vLLM side: the `deltahub` LoRA resolver, registered by the `vllm.general_plugins` entry
point. The only module of deltahub that imports vLLM.

vLLM loads general plugins in every process it starts (the API server, the engine core,
its workers), and only the API server calls resolvers, so `register` only registers: the
client, the cache and the follower's thread start at the first name asked.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

from vllm.config.lora import LoRAConfig
from vllm.lora.peft_helper import PEFTHelper
from vllm.lora.request import LoRARequest
from vllm.lora.resolver import LoRAResolver, LoRAResolverRegistry

from registry.client import DeltahubClient
from registry.serving.vllm.cache import AdapterCache
from registry.serving.vllm.follow import Follower, VllmUnloader
from registry.serving.vllm.rules import Served
from registry.serving.vllm.settings import PluginSettings
from registry.serving.vllm.source import AdapterSource

RESOLVER_NAME = "deltahub"
# Under vLLM's logger, so its handler formats and shows the lines.
_log = logging.getLogger("vllm.plugins.deltahub")


class DeltahubResolver(LoRAResolver):  # type: ignore[misc]  # vLLM ships no type stubs
    def __init__(self, settings: PluginSettings) -> None:
        self.settings = settings
        self._source: AdapterSource | None = None
        self._follower: Follower | None = None
        self._stop = threading.Event()
        self._start_lock = threading.Lock()

    async def resolve_lora(self, base_model_name: str, lora_name: str) -> LoRARequest | None:
        source, follower = self._started(base_model_name)
        try:
            resolved = await asyncio.to_thread(source.resolve, lora_name)
        except Exception:  # a bug or a full disk: this request's 404, not the server's 500
            _log.exception("deltahub: resolving %r failed", lora_name)
            return None
        if resolved is None:
            return None
        follower.serving(lora_name, resolved)
        _log.info("deltahub: serving %r as %s from %s", lora_name, resolved.name,
                  resolved.path)
        # vLLM sets lora_int_id itself; the name carries the version, the path the content.
        return LoRARequest(lora_name=resolved.name, lora_int_id=1,
                           lora_path=str(resolved.path))

    def _started(self, vllm_model: str) -> tuple[AdapterSource, Follower]:
        with self._start_lock:
            if self._source is None or self._follower is None:
                s = self.settings
                client = DeltahubClient(s.url, s.token, timeout_seconds=s.timeout_seconds)
                served = Served(s.registry_base(vllm_model), s.max_lora_rank)
                self._source = AdapterSource(client, AdapterCache(s.cache_dir, s.cache_max_bytes),
                                             served, self._inspect, _log)
                self._follower = Follower(self._source,
                                          VllmUnloader(s.server_url, s.server_api_key), _log)
                if s.refresh_seconds:
                    threading.Thread(target=self._follower.run, name="deltahub-follow",
                                     args=(s.refresh_seconds, self._stop), daemon=True).start()
                _log.info("deltahub: adapters of base %r from %s, cached in %s", served.base,
                          s.url, s.cache_dir)
            return self._source, self._follower

    def _inspect(self, path: Path) -> str | None:
        """vLLM's own verdict on the downloaded adapter_config.json (DoRA, bias, inits...)."""
        try:
            helper = PEFTHelper.from_local_dir(str(path), max_position_embeddings=None)
            helper.validate_legal(LoRAConfig(max_lora_rank=self.settings.max_lora_rank))
        except (ValueError, TypeError, KeyError) as exc:
            return f"vLLM cannot load it: {exc}"
        return None


def register() -> None:
    """The `vllm.general_plugins` entry point (vLLM may call it more than once)."""
    if RESOLVER_NAME not in LoRAResolverRegistry.get_supported_resolvers():
        LoRAResolverRegistry.register_resolver(RESOLVER_NAME,
                                               DeltahubResolver(PluginSettings.from_env()))
