"""`evaluate(..., speculative=True)`: the same greedy completions and scores, plus the MTP draft acceptance."""

from __future__ import annotations

from pathlib import Path

import pytest

from eval import evaluate


def test_speculative_eval_matches_plain_greedy_and_reports_acceptance(tiny_checkpoint: Path):
    kwargs = dict(limit=4, max_new_tokens=12, batch_size=4)
    plain = evaluate([tiny_checkpoint], ["arithmetic"], **kwargs)[0]
    spec = evaluate([tiny_checkpoint], ["arithmetic"], speculative=True, **kwargs)[0]
    assert [s["completion"] for s in spec.samples] == [s["completion"] for s in plain.samples]
    assert spec.metrics["pass@1"] == plain.metrics["pass@1"]
    assert 0.0 <= spec.metrics["mtp_acceptance"] <= 1.0


def test_speculative_needs_the_hf_backend(tiny_checkpoint: Path):
    with pytest.raises(ValueError, match="hf backend"):
        evaluate([tiny_checkpoint], ["arithmetic"], limit=1, backend="vllm", speculative=True)
