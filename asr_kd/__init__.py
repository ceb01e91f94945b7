"""asr-kd: adaptive two-stage knowledge distillation from a full-context
transducer teacher to a chunk-wise streaming transducer student."""

__version__ = "0.1.0"
