"""The language model: loading (dtype and device), LoRA training, decoding and scoring."""
