"""Evaluation: data and models for the offline default evaluation, and (later) ``symwrap eval``."""
