"""NVFP4 format: spec tables, quantizer, ModelOpt-compatible checkpoints."""
