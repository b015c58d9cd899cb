"""The plugin's settings: `DELTAHUB_*` environment variables, and two of vLLM's own flags.

A client-side module: it reads the environment of the vLLM process, not the server's
`registry.settings` (which would bring the server stack into vLLM). Two values are
vLLM's own (`--max-lora-rank`, `--port`); vLLM does not hand them to a resolver, so
they are read from the command line that started it, and a `DELTAHUB_VLLM_*` variable
overrides either (for a `--config` file, or a server behind another address).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from registry.client import DEFAULT_TIMEOUT_SECONDS, DEFAULT_URL

DEFAULT_CACHE_MAX_BYTES = 20 * 10**9
DEFAULT_REFRESH_SECONDS = 30.0
VLLM_DEFAULT_MAX_LORA_RANK = 16  # vllm.config.lora.LoRAConfig.max_lora_rank
VLLM_DEFAULT_PORT = 8000

_Number = TypeVar("_Number", int, float)


@dataclass(frozen=True)
class PluginSettings:
    url: str
    token: str | None
    timeout_seconds: float
    cache_dir: Path
    cache_max_bytes: int
    base: str | None  # None: the last part of vLLM's --model (`/models/llama2-7b` -> `llama2-7b`)
    refresh_seconds: float  # 0: never look again at a name once it is served
    max_lora_rank: int
    server_url: str  # this vLLM server, for its /v1/unload_lora_adapter
    server_api_key: str | None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None,
                 argv: Sequence[str] | None = None) -> PluginSettings:
        """Raises ValueError naming the variable to fix."""
        env = os.environ if env is None else env
        argv = sys.argv if argv is None else argv
        port = _number(_flag(argv, "--port") or str(VLLM_DEFAULT_PORT), "vLLM's --port", int)
        rank = env.get("DELTAHUB_VLLM_MAX_LORA_RANK") or _flag(argv, "--max-lora-rank")
        settings = cls(
            url=env.get("DELTAHUB_URL") or DEFAULT_URL,
            token=env.get("DELTAHUB_TOKEN") or None,
            timeout_seconds=_number(env.get("DELTAHUB_TIMEOUT_SECONDS")
                                    or str(DEFAULT_TIMEOUT_SECONDS),
                                    "DELTAHUB_TIMEOUT_SECONDS", float),
            cache_dir=Path(env.get("DELTAHUB_CACHE_DIR") or _default_cache_dir(env)),
            cache_max_bytes=_number(env.get("DELTAHUB_CACHE_MAX_BYTES")
                                    or str(DEFAULT_CACHE_MAX_BYTES),
                                    "DELTAHUB_CACHE_MAX_BYTES", int),
            base=env.get("DELTAHUB_VLLM_BASE") or None,
            refresh_seconds=_number(env.get("DELTAHUB_VLLM_REFRESH_SECONDS")
                                    or str(DEFAULT_REFRESH_SECONDS),
                                    "DELTAHUB_VLLM_REFRESH_SECONDS", float),
            max_lora_rank=_number(rank or str(VLLM_DEFAULT_MAX_LORA_RANK),
                                  "DELTAHUB_VLLM_MAX_LORA_RANK (or vLLM's --max-lora-rank)", int),
            server_url=(env.get("DELTAHUB_VLLM_SERVER_URL")
                        or f"http://127.0.0.1:{port}").rstrip("/"),
            server_api_key=env.get("VLLM_API_KEY") or None,
        )
        settings.check()
        return settings

    def check(self) -> None:
        if self.cache_max_bytes <= 0:
            raise ValueError(f"DELTAHUB_CACHE_MAX_BYTES must be a positive number of bytes, "
                             f"got {self.cache_max_bytes}")
        if self.refresh_seconds != 0 and self.refresh_seconds < 1:
            raise ValueError("DELTAHUB_VLLM_REFRESH_SECONDS must be 0 (never re-resolve) or at "
                             f"least 1, got {self.refresh_seconds}")
        if self.max_lora_rank <= 0:
            raise ValueError("DELTAHUB_VLLM_MAX_LORA_RANK (or vLLM's --max-lora-rank) must be "
                             f"positive, got {self.max_lora_rank}")
        if self.timeout_seconds <= 0:
            raise ValueError(f"DELTAHUB_TIMEOUT_SECONDS must be positive, got "
                             f"{self.timeout_seconds}")

    def registry_base(self, vllm_model: str) -> str:
        """The registry's name of the base vLLM serves (`vllm_model`: its --model)."""
        return self.base or Path(vllm_model.rstrip("/")).name


def _default_cache_dir(env: Mapping[str, str]) -> Path:
    root = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "deltahub" / "vllm"


def _flag(argv: Sequence[str], name: str) -> str | None:
    """The value of `name` on a command line (`--name V` or `--name=V`; the last wins)."""
    found = None
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            found = argv[i + 1]
        elif arg.startswith(name + "="):
            found = arg.split("=", 1)[1]
    return found


def _number(text: str, what: str, kind: type[_Number]) -> _Number:
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{what} must be a number, got {text!r}") from None
