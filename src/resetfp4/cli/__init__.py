"""resetfp4.cli"""
