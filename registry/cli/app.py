"""The `deltahub` console script."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="deltahub",
    help="Adapter registry and delta compression for fine-tuned LLMs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# Each module defines `register(app)`; the order here is the order of `deltahub --help`.
COMMAND_MODULES: tuple[str, ...] = (
    "server_commands",
    "worker_commands",
    "client_commands",
    "job_commands",
    "bitdelta_commands",
    "lora_commands",
    "verify_commands",
)


def _register_all() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"registry.cli.{name}").register(app)


_register_all()


def main() -> None:
    app()
