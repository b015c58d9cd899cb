"""The tiny real fine-tune (tests/finetune.py), for jobs that distill and evaluate."""

from tests.finetune import finetune_pair  # noqa: F401  (a fixture)
