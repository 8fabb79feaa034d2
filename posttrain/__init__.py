"""posttrain: SFT, R1 distillation, GRPO and eval for DeepSeek-V3-architecture MoE models."""

__version__ = "0.1.0"
