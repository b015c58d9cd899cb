"""A model, its tokenizer and its text: what quality evaluation and scale distillation share.

Below both users (compress.quality and compress.bitdelta's distillation import from here;
nothing here imports either), so neither imports the other for these:
- models (model.py): `build_model` runs a config.json's architecture (transformers,
  imported lazily) on weights read by compress.tensorio;
- tokenizers (tokenizer.py): `TextTokenizer` from the model's own tokenizer.json
  (`model_tokenizer`);
- data (data.py): `load_eval_data` reads `.txt`, `.jsonl` or pre-tokenized `.safetensors`
  into rows of token ids, refusing pickles, oversized and malformed files.
"""
