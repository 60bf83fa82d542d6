"""resetfp4.bench"""
