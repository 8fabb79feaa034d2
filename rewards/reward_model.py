"""The `reward_model` reward: a scalar from a Hugging Face sequence-classification checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from posttrain.errors import UserError
from rewards.base import Reward, RowScores, Score
from rewards.model_inputs import default_device, render


@dataclass
class RewardModelReward(Reward):
    """The score an `AutoModelForSequenceClassification` checkpoint gives each (prompt, completion) pair.

    A one-label head's logit is the reward; with several labels it is the softmax probability of `label`.
    Pairs go through the checkpoint's chat template when it has one. Batched (`batch_size`), in eval mode, on
    `device` (default: the trainer's, via accelerate). The model loads on first call.

    Example (needs a checkpoint): `get_reward({"name": "reward_model", "model": "path/to/rm", "batch_size": 16})`.
    """

    name: ClassVar[str] = "reward_model"

    model: str = field(default="", metadata={"help": "Path (or hub id, if cached) of the classification model."})
    batch_size: int = field(default=8, metadata={"help": "Pairs per forward pass."})
    max_length: int = field(default=2048, metadata={"help": "Tokens kept per pair (truncated from the left)."})
    label: int = field(default=-1, metadata={"help": "With several labels, the one whose probability is the reward."})
    device: str = field(default="", metadata={"help": "Torch device; empty means the trainer's."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.model:
            raise UserError("reward 'reward_model' needs option 'model': the path of a sequence-classification "
                            "checkpoint, e.g. {'name': 'reward_model', 'model': 'outputs/rm'}")
        if self.batch_size < 1:
            raise UserError(f"reward 'reward_model': batch_size must be >= 1, got {self.batch_size}")
        self._loaded: tuple[Any, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_loaded": None}

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.model)
            # Left truncation keeps the completion, which is what is being scored.
            tokenizer.truncation_side = "left"
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
            model = AutoModelForSequenceClassification.from_pretrained(self.model)
            # Classification heads pool at the last non-pad token, which needs the pad id.
            model.config.pad_token_id = tokenizer.pad_token_id
            self._loaded = (tokenizer, model.to(self.device or default_device()).eval())
        return self._loaded

    def score_batch(self, prompts: list[Any], texts: list[str], rows: list[dict[str, Any]]) -> RowScores:
        import torch

        tokenizer, model = self._load()
        pairs = [render(tokenizer, p, t) for p, t in zip(prompts, texts, strict=True)]
        scores: list[Score | BaseException] = []
        for start in range(0, len(pairs), self.batch_size):
            batch = tokenizer(pairs[start : start + self.batch_size], return_tensors="pt", padding=True,
                              truncation=True, max_length=self.max_length).to(model.device)
            with torch.inference_mode():
                logits = model(**batch).logits.float()
            values = logits[:, 0] if logits.shape[-1] == 1 else logits.softmax(-1)[:, self.label]
            scores.extend(values.tolist())
        return scores
