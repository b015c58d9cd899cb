"""A model, its tokenizer and its text: what quality evaluation and scale distillation share.

Below both users (neither imports the other for these): `build_model` (model.py),
`TextTokenizer` / `model_tokenizer` (tokenizer.py), `load_eval_data` (data.py).
See docs/codecs.md, "Quality evaluation and shared model code".
"""
