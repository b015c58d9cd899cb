"""`deltahub merge BASE ADAPTER -o DIR`: the fine-tune as a full safetensors model.

ADAPTER is a BitDelta delta (rebuilt from its bits, streamed tensor by tensor: codec
compress/bitdelta/merge.py) or a PEFT adapter directory, of any type peft merges (merged
by peft's own `merge_and_unload`: compress/peft/merge.py). Either way the adapter is
checked against BASE before any weight is read, and the output directory appears only
once complete. Codec errors print their message and exit with status 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from compress.bitdelta import GB, merge_bitdelta
from compress.errors import CodecError
from compress.peft.merge import is_peft_adapter, merge_peft
from registry.cli.console import byte_progress, codec_failure, print_table
from registry.cli.options import Device

MaxShardGB = Annotated[float, typer.Option(help="start a new shard past this size (GB)")]


def merge(
    base: Annotated[Path, typer.Argument(help="the base the adapter was made against")],
    adapter: Annotated[Path, typer.Argument(
        help="a BitDelta delta directory, or a PEFT adapter directory (adapter_config.json)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="new model directory")],
    device: Device = "cpu",
    max_shard_gb: MaxShardGB = 5.0,
) -> None:
    """Rebuild the fine-tune from BASE and ADAPTER (BitDelta or PEFT) as a safetensors model.

    A PEFT adapter of any type peft merges (LoRA, DoRA, rsLoRA, AdaLoRA, VeRA, IA³, LoHa,
    LoKr, OFT, ...) is merged with peft's merge_and_unload; prompt, p- and prefix tuning
    change no weight and are refused (serve them with PEFT/transformers).
    """
    if max_shard_gb <= 0:
        raise typer.BadParameter("--max-shard-gb must be positive")
    shard_bytes = int(max_shard_gb * GB)
    try:
        if is_peft_adapter(adapter):
            _merge_peft(base, adapter, output, device, shard_bytes)
            return
        with byte_progress("merging") as progress:
            report = merge_bitdelta(base, adapter, output, device=device, progress=progress,
                                    max_shard_bytes=shard_bytes)
    except CodecError as exc:
        raise codec_failure(exc) from exc
    print_table(f"Merged model: {output}", ["", "value"], [
        ["weights rebuilt from bits", report.reconstructed],
        ["tensors taken from the delta", report.replaced],
        ["tensors taken from the base", report.copied],
        ["size (GB)", report.bytes_out / GB],
        ["files", ", ".join(report.files)],
        ["seconds", report.seconds],
    ], fold=True)


def register(app: typer.Typer) -> None:
    app.command("merge")(merge)


def _merge_peft(base: Path, adapter: Path, output: Path, device: str,
                shard_bytes: int) -> None:
    report = merge_peft(base, adapter, output, device=device, max_shard_bytes=shard_bytes)
    print_table(f"Merged model: {output}", ["", "value"], [
        ["PEFT type", report.peft_type if report.validated
         else f"{report.peft_type} (not checked by deltahub)"],
        ["modules merged", report.modules or "?"],
        ["tensors written", report.tensors],
        ["dtype", report.dtype],
        ["size (GB)", report.bytes_out / GB],
        ["files", ", ".join(report.files)],
        ["seconds", report.seconds],
    ], fold=True)
