"""resetfp4.kernels"""
