"""resetfp4.eval"""
