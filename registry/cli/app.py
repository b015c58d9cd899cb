"""The `deltahub` console script: a table of commands, each imported only when it runs.

The client commands need httpx, typer and rich (`pip install deltahub`); the codec
commands need the `compress` extra (torch), the server commands the `server` extra.
Nothing here imports a command module, so `deltahub --help` and `deltahub ls` start in
a fraction of a second (benchmarks/cli_bench.py), and a command whose extra is missing
says which one to install.
"""

from __future__ import annotations

from typing import Annotated

import typer

from registry.cli.failures import EXIT_STATUS_HELP
from registry.cli.lazy import Entry, LazyGroup

CLIENT = "Registry (over HTTP: DELTAHUB_URL, DELTAHUB_TOKEN)"
CODECS = "Codecs (local files; the compress extra)"
SERVER = "Server (its database and storage; the server extra)"

# The order here is the order of `deltahub --help`.
COMMANDS: dict[str, Entry] = {
    "push": Entry("transfer_commands", "Push an adapter directory (peft or BitDelta output): "
                  "upload its files and get a version.", CLIENT),
    "push-model": Entry("transfer_commands", "Register a base model or a full fine-tune: "
                        "upload its files and finalize.", CLIENT),
    "attach-tokenizer": Entry("transfer_commands", "Add tokenizer files to a registered "
                              "model, whose weights stay as they are.", CLIENT),
    "push-dataset": Entry("dataset_commands", "Register a data set (calibration or "
                          "evaluation data): upload its files and finalize.", CLIENT),
    "pull": Entry("transfer_commands", "Download an adapter's (or, with --model, a model's) "
                  "files, checked against their sha256.", CLIENT),
    "ls": Entry("catalog_commands", "List adapters or models, newest first, or adapters by "
                "gain kept.", CLIENT),
    "show": Entry("catalog_commands", "Show one adapter version (or, with --model, one "
                  "model): aliases, files, lineage, quality.", CLIENT),
    "datasets": Entry("dataset_commands", "List data sets, newest first.", CLIENT),
    "alias": Entry("catalog_commands", "Point an alias at an adapter version, or remove it.",
                   CLIENT),
    "rm": Entry("catalog_commands", "Delete an adapter version (or, with --model, a model).",
                CLIENT),
    "compress": Entry("job_commands", "Compress a registered fine-tune into a BitDelta or "
                      "LoRA adapter, as a server job.", CLIENT),
    "jobs": Entry("job_commands", "Compression jobs.", CLIENT),
    "events": Entry("event_commands", "Print the registry's events, oldest first; --follow "
                    "waits for new ones.", CLIENT),
    "webhooks": Entry("webhook_commands", "Signed webhooks: add, ls, rm, test, deliveries "
                      "(an admin token).", CLIENT),
    "bitdelta": Entry("bitdelta_commands", "Compress FINETUNE into a 1-bit BitDelta delta "
                      "over BASE.", CODECS, "compress"),
    "merge": Entry("merge_commands", "Rebuild the fine-tune from BASE and ADAPTER (BitDelta "
                   "or PEFT) as a safetensors model.", CODECS, "compress"),
    "extract-lora": Entry("lora_commands", "Distill FINETUNE into a PEFT LoRA adapter over "
                          "BASE (randomized truncated SVD).", CODECS, "compress"),
    "verify": Entry("verify_commands", "Check every compressed layer of DELTA: kernel vs "
                    "float32 reference, and vs FINETUNE.", CODECS, "compress"),
    "evaluate": Entry("evaluate_commands", "Measure how much of FINETUNE's gain over BASE a "
                      "compressed model keeps, on data.", CODECS, "compress"),
    "engine": Entry("engine_commands", "Serve BASE and its BitDelta fine-tunes from the "
                    "registry (OpenAI-compatible API).", SERVER, "server"),
    "serve": Entry("server_commands", "Run the API server (the database must be migrated: "
                   "`deltahub db upgrade`).", SERVER, "server"),
    "worker": Entry("worker_commands", "Run compression jobs, and send webhook deliveries, "
                    "until interrupted.", SERVER,
                    "server"),
    "db": Entry("server_commands", "Database schema migrations.", SERVER, "server"),
    "token": Entry("server_commands", "API tokens, straight in the database.", SERVER,
                   "server"),
    "gc": Entry("server_commands", "Remove stale drafts, staging leftovers and blobs that "
                "nothing references.", SERVER, "server"),
}


class DeltahubGroup(LazyGroup):
    entries = COMMANDS


app = typer.Typer(
    name="deltahub",
    cls=DeltahubGroup,
    help="Adapter registry and delta compression for fine-tuned LLMs.",
    epilog=EXIT_STATUS_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def root(
    debug: Annotated[bool, typer.Option(
        "--debug", envvar="DELTAHUB_DEBUG",
        help="on a failure, print the traceback before the one-line message")] = False,
) -> None:
    """Adapter registry and delta compression for fine-tuned LLMs."""


def main() -> None:
    app()
