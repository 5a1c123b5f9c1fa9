"""The machinery: files written whole, checkpoints, exports, downloads, datasets, run directories, processes.

It imports the core's building blocks (config, model, tokenizer, weights) to read and write them; the core's
lower half never imports it (tests/test_layout.py)."""
