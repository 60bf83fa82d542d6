"""resetfp4.sampling"""
