"""`deltahub engine BASE`: serve a base and its BitDelta fine-tunes over an OpenAI-style API.

BASE is a local model directory, or a base registered in the registry (pulled once into
the cache directory). Adapters come from the registry at DELTAHUB_URL with DELTAHUB_TOKEN,
on first use; callers authenticate with their own registry tokens (read scope).
"""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Annotated

import torch
import typer

from registry.cli.console import console
from registry.cli.failures import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_USAGE, CommandFailure
from registry.cli.remote import DEFAULT_URL, Token, Url
from registry.client import DeltahubClient

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DEFAULT_CACHE = Path.home() / ".cache" / "deltahub" / "engine"


def _env(name: str) -> str:
    return f"DELTAHUB_ENGINE_{name}"


def engine(
    base: Annotated[str, typer.Argument(help="a registered base's name, or a model directory")],
    host: Annotated[str, typer.Option(envvar=_env("HOST"), help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar=_env("PORT"), help="port")] = 8100,
    max_tenants: Annotated[int, typer.Option(
        envvar=_env("MAX_TENANTS"), min=1, help="fine-tunes resident at once")] = 16,
    memory_budget: Annotated[float, typer.Option(
        envvar=_env("MEMORY_BUDGET_GB"), min=0.001,
        help="GB the resident fine-tunes may hold (signs, α, full tensors); the least "
             "recently used idle one is evicted past it")] = 8.0,
    max_batch: Annotated[int, typer.Option(
        envvar=_env("MAX_BATCH"), min=1, help="requests decoding together")] = 32,
    max_waiting: Annotated[int, typer.Option(
        envvar=_env("MAX_WAITING"), min=0,
        help="requests queued behind the batch; more are answered 503")] = 64,
    dtype: Annotated[str, typer.Option(envvar=_env("DTYPE"),
                                       help="float32, float16 or bfloat16")] = "float32",
    device: Annotated[str, typer.Option(envvar=_env("DEVICE"),
                                        help="cpu, cuda, cuda:1, ...")] = "cpu",
    name: Annotated[str | None, typer.Option(
        help="the base's name in the registry, for a local BASE directory (default: the "
             "directory's name)", show_default=False)] = None,
    cache_dir: Annotated[Path, typer.Option(envvar=_env("CACHE_DIR"),
                                            help="where pulled files are kept")] = DEFAULT_CACHE,
    public: Annotated[bool, typer.Option(
        help="serve without checking callers' tokens (behind a proxy that does)")] = False,
    url: Url = DEFAULT_URL, token: Token = None,
) -> None:
    """Serve BASE and its BitDelta fine-tunes from the registry (OpenAI-compatible API)."""
    import uvicorn

    from registry.serving.engine.app import create_app
    from registry.serving.engine.auth import RegistryTokens
    from registry.serving.engine.engine import Engine, EngineLimits
    from registry.serving.engine.errors import EngineError, ModelNotFound
    from registry.serving.engine.sources import RegistryAdapters

    if dtype not in DTYPES:
        raise CommandFailure("bad --dtype", f"{dtype!r} is not one of {', '.join(DTYPES)}",
                             EXIT_USAGE)
    limits = EngineLimits(max_tenants=max_tenants,
                          memory_budget_bytes=int(memory_budget * 1e9), max_batch=max_batch,
                          max_waiting=max_waiting, dtype=DTYPES[dtype], device=device)
    with closing(DeltahubClient(url, token)) as client:
        try:
            base_dir, base_name = _base(client, base, name, cache_dir)
            served = Engine(base_dir, base_name,
                            RegistryAdapters(client, cache_dir, base_name), limits)
        except EngineError as exc:
            code = EXIT_NOT_FOUND if isinstance(exc, ModelNotFound) else EXIT_FAILED
            raise CommandFailure(type(exc).__name__, exc.detail, code) from exc
        console.print(f"serving {base_name} and its BitDelta fine-tunes from {url} on "
                      f"http://{host}:{port}/v1", highlight=False)
        uvicorn.run(create_app(served, None if public else RegistryTokens(url)), host=host,
                    port=port, log_level="info")


def _base(client: DeltahubClient, base: str, name: str | None, cache_dir: Path
          ) -> tuple[Path, str]:
    """A local directory (named `name`, or as the directory), else a registered base pulled."""
    from registry.serving.engine.sources import pull_base

    local = Path(base)
    if local.is_dir():
        return local, name or local.resolve().name
    return pull_base(client, base, cache_dir), base


def register(app: typer.Typer) -> None:
    app.command()(engine)
