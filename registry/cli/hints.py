"""A server refusal in a CLI user's words: the command to run where the server names an
API route, and the `deltahub compress` flag where it names a request field.

The server speaks to every client, so its details name routes and JSON fields; the CLI
says the same thing in its own terms, at the one place refusals are printed
(registry/cli/failures.py).
"""

from __future__ import annotations

import re

_NAME = r"([^\s/,;)]+)"

# (what the server says, what the CLI says instead); the first match of each applies.
_ROUTES: tuple[tuple[str, str], ...] = (
    (r"GET /adapters(?:\?\S*)?", "`deltahub ls adapters`"),
    (r"GET /models", "`deltahub ls models`"),
    (r"GET /datasets", "`deltahub datasets`"),
    (r"GET /jobs", "`deltahub jobs ls`"),
    (r"POST /jobs/\{id\}/cancel", "`deltahub jobs cancel ID`"),
    (rf"POST /datasets/{_NAME}/finalize", r"`deltahub push-dataset ... --name \1` again"),
    (rf"POST\s+/models/{_NAME}/finalize", r"`deltahub push-model ... --name \1` again"),
    (rf"PUT /models/{_NAME}/files/<filename>", r"`deltahub push-model ... --name \1`"),
    (rf"DELETE /models/{_NAME}", r"`deltahub rm --model \1`"),
    (r"POST /adapters", "`deltahub push`"),
    (rf"PUT /adapters/{_NAME}@<version>/aliases/{_NAME}",
     r"`deltahub alias set \1@VERSION \2`"),
    (r"POST /tokens with scopes \[\"admin\"\]", "`deltahub token create --scopes admin`"),
)

# `deltahub compress` flags of CompressRequest's fields, as refusals name them.
_FIELDS = {
    "method=lora": "--method lora", "method=bitdelta": "--method bitdelta",
    "target_error": "--target-error", "max_rank": "--max-rank", "scale_mode": "--scale-mode",
    "targets_only": "--targets-only", "save_modules": "--save-modules",
    "max_error": "--max-error", "rank": "--rank", "targets": "--target",
    "distill.dataset": "--distill", "distill.steps": "--distill-steps",
    "distill.lr": "--distill-lr", "distill.batch_size": "--distill-batch-size",
    "distill.seq_len": "--distill-seq-len", "distill.seed": "--distill-seed",
    "evaluate.datasets": "--evaluate", "evaluate.batch_size": "--evaluate-batch-size",
    "evaluate.seq_len": "--evaluate-seq-len", "evaluate.max_batches": "--evaluate-max-batches",
    "evaluate.max_tokens": "--evaluate-max-tokens",
    "distill": "--distill",  # not bare "evaluate": refusals use it as a verb
}
# A field's name as a word of its own (not inside a longer name, a path or plain English
# such as "the smallest rank that reaches it": there `rank` is followed by a space and a
# lower-case word, so bare `rank` is taken only before "(", "=", ",", ";" or the end).
_FIELD = re.compile(
    r"(?<![\w./-])("
    + "|".join(re.escape(f) for f in sorted(_FIELDS, key=len, reverse=True) if f != "rank")
    + r"|rank(?=\s*[(=,;]|$))(?![\w-])")


def for_cli(detail: str) -> str:
    """`detail` with API routes replaced by the commands that do the same."""
    for pattern, replacement in _ROUTES:
        detail = re.sub(pattern, replacement, detail)
    return detail


def compress_flags(detail: str) -> str:
    """A refusal of `deltahub compress`'s request with its fields named as the flags."""
    return _FIELD.sub(lambda m: _FIELDS[m.group(1)], detail)
