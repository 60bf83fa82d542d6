"""resetfp4.integrations"""
