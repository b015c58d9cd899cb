"""A real fine-tune to measure compression on, made on the CPU in well under a minute.

`tests/models.py` perturbs random weights, which is enough to test a codec's arithmetic
but says nothing about what a compressed model keeps of a fine-tune. Here a tiny Llama
(byte-level: token id = byte value, so no tokenizer has to be trained) is pretrained
briefly on English prose (the pydoc topics that ship with Python) and then fine-tuned on
Python source from the standard library. The fine-tune then predicts held-out Python
(other stdlib files) clearly better than its base, and held-out prose a little worse:
a gain that compression can keep or lose, and a second domain to watch.

`make_finetune_pair(dir)` writes two model directories as deltahub reads them
(`config.json`, `model.safetensors`, and a byte-level `tokenizer.json` made with the
`tokenizers` package) and the data sets: for each domain a training and a held-out split
as pre-tokenized `.safetensors` (`input_ids` [n, seq], int64), plus the held-out splits
as text (`python_heldout.txt`, `prose_heldout.jsonl`) whose tokens are exactly those rows.

Everything is seeded and runs on a fixed number of threads (one by default: on a shared
2-core machine a second thread is slower, and one thread makes the result the same on
any machine with this torch build). The `finetune_pair` fixture builds the pair once and
keeps it in pytest's cache (`.pytest_cache/d/finetune-pair/<fingerprint>`), keyed by this
file's text and the library versions, so a changed recipe always trains again;
`pytest --cache-clear` drops it.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sysconfig
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

VOCAB_SIZE = 256  # one token per byte value
TOKENIZER_FILE = "tokenizer.json"

# Python the fine-tune learns from, and Python it never sees (about 600 kB and 100 kB).
PYTHON_TRAIN = ("argparse.py", "textwrap.py", "dataclasses.py", "enum.py", "functools.py",
                "shutil.py", "subprocess.py", "pathlib.py", "inspect.py")
PYTHON_HELDOUT = ("csv.py", "fractions.py", "heapq.py", "bisect.py", "calendar.py")
PROSE_HELDOUT_EVERY = 5  # every 5th pydoc topic (in name order) is held out


@dataclass(frozen=True)
class Recipe:
    """How the pair is made. Every field is part of the cache key."""

    hidden_size: int = 64
    intermediate_size: int = 160
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    seq_len: int = 64
    batch_size: int = 16
    pretrain_steps: int = 300
    finetune_steps: int = 200
    pretrain_lr: float = 3e-3
    finetune_lr: float = 1e-3
    seed: int = 0
    threads: int = 1


@dataclass(frozen=True)
class Split:
    train: Path  # .safetensors, input_ids [n, seq] int64
    heldout: Path


@dataclass(frozen=True)
class FinetunePair:
    root: Path
    base: Path  # config.json, model.safetensors, tokenizer.json
    finetune: Path  # the same files, fine-tuned on Python
    python: Split  # the fine-tune's domain
    prose: Split  # the base's domain
    python_text: Path  # held-out Python as UTF-8 text: the rows of python.heldout
    prose_jsonl: Path  # held-out prose, one {"text": ...} per topic: the rows of prose.heldout
    recipe: Recipe


def make_finetune_pair(out: Path, recipe: Recipe = Recipe()) -> FinetunePair:
    """Pretrain on prose, fine-tune on Python, and write both models and the data to `out`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    pair = _layout(out, recipe)
    out.mkdir(parents=True, exist_ok=True)
    prose_train, prose_heldout = prose_corpus()
    python_train, python_heldout = python_corpus()
    rows = {"prose_train": to_rows(prose_train, recipe.seq_len),
            "prose_heldout": to_rows(prose_heldout, recipe.seq_len),
            "python_train": to_rows(python_train, recipe.seq_len),
            "python_heldout": to_rows(python_heldout, recipe.seq_len)}
    for name, ids in rows.items():
        save_file({"input_ids": ids}, out / f"{name}.safetensors")
    pair.python_text.write_text(python_heldout, encoding="utf-8")
    pair.prose_jsonl.write_text("".join(json.dumps({"text": t}) + "\n"
                                        for t in prose_documents(heldout=True)))
    config = LlamaConfig(vocab_size=VOCAB_SIZE, hidden_size=recipe.hidden_size,
                         intermediate_size=recipe.intermediate_size,
                         num_hidden_layers=recipe.layers, num_attention_heads=recipe.heads,
                         num_key_value_heads=recipe.kv_heads,
                         max_position_embeddings=recipe.seq_len, tie_word_embeddings=False)
    tokenizer = byte_tokenizer_json()
    with _threads(recipe.threads):
        torch.manual_seed(recipe.seed)
        model = LlamaForCausalLM(config)
        train(model, rows["prose_train"], recipe.pretrain_steps, recipe.pretrain_lr,
              recipe.batch_size, seed=recipe.seed)
        _save(model, pair.base, tokenizer)
        train(model, rows["python_train"], recipe.finetune_steps, recipe.finetune_lr,
              recipe.batch_size, seed=recipe.seed + 1)
        _save(model, pair.finetune, tokenizer)
    return pair


def cached_finetune_pair(cache_root: Path, recipe: Recipe = Recipe()) -> FinetunePair:
    """`make_finetune_pair`, built once per fingerprint under `cache_root` and reused."""
    final = cache_root / fingerprint(recipe)
    if not (final / "complete").exists():
        cache_root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".building-", dir=cache_root))
        try:
            make_finetune_pair(scratch, recipe)
            (scratch / "complete").write_text("")
            try:
                scratch.rename(final)  # atomic: a reader never sees half a pair
            except OSError:
                if not (final / "complete").exists():  # lost a race only if it finished
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return _layout(final, recipe)


def fingerprint(recipe: Recipe) -> str:
    import transformers

    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(json.dumps(asdict(recipe), sort_keys=True).encode())
    digest.update(f"{torch.__version__} {transformers.__version__}".encode())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def finetune_pair(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> FinetunePair:
    """The default pair, from pytest's cache (built on the first run). Read-only."""
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    root = cache.mkdir("finetune-pair") if cache is not None else tmp_path_factory.mktemp(
        "finetune-pair")
    return cached_finetune_pair(root)


def prose_documents(*, heldout: bool) -> list[str]:
    """The pydoc topics in name order, each ending in a blank line: train or held out."""
    from pydoc_data.topics import topics

    names = sorted(topics)
    return [topics[name].strip() + "\n\n" for i, name in enumerate(names)
            if (i % PROSE_HELDOUT_EVERY == 0) == heldout]


def prose_corpus() -> tuple[str, str]:
    return "".join(prose_documents(heldout=False)), "".join(prose_documents(heldout=True))


def python_corpus() -> tuple[str, str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])

    def read(names: Sequence[str]) -> str:
        return "".join((stdlib / name).read_text(encoding="utf-8") + "\n\n" for name in names)

    return read(PYTHON_TRAIN), read(PYTHON_HELDOUT)


def to_rows(text: str, seq_len: int) -> torch.Tensor:
    """The text's bytes as int64 rows of `seq_len`; the tail that fills no row is dropped."""
    data = torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8)
    n = data.numel() // seq_len
    return data[: n * seq_len].to(torch.int64).reshape(n, seq_len).contiguous()


def byte_tokenizer_json() -> str:
    """A `tokenizers` tokenizer whose ids are the UTF-8 bytes of the text, as JSON.

    Byte-level BPE with no merges: the ByteLevel pre-tokenizer maps each byte to one
    printable character (GPT-2's table), and the vocabulary maps that character back to
    the byte's value.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {char: byte for byte, char in enumerate(_byte_chars())}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer.to_str(pretty=True)


def _byte_chars() -> list[str]:
    """GPT-2's bytes_to_unicode, as a list indexed by byte value."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def train(model: torch.nn.Module, rows: torch.Tensor, steps: int, lr: float,
          batch_size: int, seed: int) -> None:
    """AdamW on random batches of `rows`: 10% linear warm-up, then cosine down to lr/10."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95),
                                  weight_decay=0.0)
    warmup = max(1, steps // 10)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model.train()
    for _ in range(steps):
        batch = rows[torch.randint(0, rows.shape[0], (batch_size,), generator=generator)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
    model.eval()


def _save(model: torch.nn.Module, out: Path, tokenizer: str) -> None:
    from transformers.utils import logging

    # save_pretrained draws a progress bar, on every test run's stderr otherwise
    logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    model.save_pretrained(out)  # type: ignore[operator]
    (out / TOKENIZER_FILE).write_text(tokenizer, encoding="utf-8")


def _layout(root: Path, recipe: Recipe) -> FinetunePair:
    return FinetunePair(
        root=root, base=root / "base", finetune=root / "finetune",
        python=Split(root / "python_train.safetensors", root / "python_heldout.safetensors"),
        prose=Split(root / "prose_train.safetensors", root / "prose_heldout.safetensors"),
        python_text=root / "python_heldout.txt", prose_jsonl=root / "prose_heldout.jsonl",
        recipe=recipe)


@contextmanager
def _threads(count: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
