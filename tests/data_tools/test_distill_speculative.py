"""The distillation `hf` teacher with `speculative: true` decodes through the MTP drafter: greedy samples match."""

from __future__ import annotations

from pathlib import Path

from data_tools.distill.backends import HFBackend
from data_tools.distill.config import SamplingConfig, TeacherConfig


def test_speculative_teacher_gives_the_same_greedy_samples(tiny_checkpoint: Path):
    sampling = SamplingConfig(n=1, temperature=0.0, max_new_tokens=10)
    conversations = [[{"role": "user", "content": f"What is {i} + {i}?"}] for i in range(3)]
    texts = []
    for speculative in (False, True):
        teacher = TeacherConfig(backend="hf", model=str(tiny_checkpoint), device="cpu", speculative=speculative)
        out = HFBackend(teacher, sampling).generate(conversations, [1, 1, 1], seed=0)
        texts.append([g.text for samples in out for g in samples])
    assert texts[0] == texts[1]
