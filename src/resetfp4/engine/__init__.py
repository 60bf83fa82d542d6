"""resetfp4.engine"""
