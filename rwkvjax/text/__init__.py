"""Tokenizers: raw bytes and the RWKV World vocabulary, chosen from the model's vocabulary size."""
