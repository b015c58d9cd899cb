"""Quality evaluation: how much of a fine-tune's improvement a compressed model keeps.

`evaluate_quality` (loss, perplexity and gain kept of base, fine-tune and compressed model,
as a `QualityReport`); `open_variant` (a BitDelta delta, a PEFT LoRA or a whole model).
Re-exports compress.modeling's data, tokenizer and model API.
See docs/codecs.md, "Quality evaluation and shared model code".
"""

from compress.modeling.data import (
    DEFAULT_MAX_DATA_BYTES,
    INPUT_IDS,
    TEXT_FIELD,
    DataKind,
    EvalData,
    check_data_file,
    data_kind,
    load_eval_data,
    read_documents,
    read_token_rows,
)
from compress.modeling.model import build_model, causal_lm_config, model_bytes
from compress.modeling.tokenizer import TOKENIZER_FILE, TextTokenizer, model_tokenizer
from compress.quality.errors import (
    InvalidDataset,
    MissingDependency,
    MissingTokenizer,
    NonFiniteLoss,
)
from compress.quality.evaluation import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_BATCHES,
    DEFAULT_MAX_TOKENS,
    DEFAULT_SEQ_LEN,
    DTYPES,
    evaluate_quality,
    mean_loss,
)
from compress.quality.report import (
    MIN_GAIN_NATS,
    Change,
    DatasetQuality,
    QualityReport,
    Score,
    finetune_change,
    gain_kept,
)
from compress.quality.variants import Variant, VariantKind, open_variant, variant_kind

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_BATCHES",
    "DEFAULT_MAX_DATA_BYTES",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_SEQ_LEN",
    "DTYPES",
    "INPUT_IDS",
    "MIN_GAIN_NATS",
    "TEXT_FIELD",
    "TOKENIZER_FILE",
    "Change",
    "DataKind",
    "DatasetQuality",
    "EvalData",
    "InvalidDataset",
    "MissingDependency",
    "MissingTokenizer",
    "NonFiniteLoss",
    "QualityReport",
    "Score",
    "TextTokenizer",
    "Variant",
    "VariantKind",
    "build_model",
    "causal_lm_config",
    "check_data_file",
    "data_kind",
    "evaluate_quality",
    "finetune_change",
    "gain_kept",
    "load_eval_data",
    "mean_loss",
    "model_bytes",
    "model_tokenizer",
    "open_variant",
    "read_documents",
    "read_token_rows",
    "variant_kind",
]
