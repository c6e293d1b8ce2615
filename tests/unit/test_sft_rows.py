"""train_sft.py: loss mask on a real batch, chat templates for chat and base models, resume, bad inputs,
and a two-process `accelerate launch` on CPU."""

from __future__ import annotations

from helpers.data import sft_rows

from selfalign.funnel import Funnel
from selfalign.training import conversation_rows


def test_malformed_rows_are_counted_not_trained():
    funnel = Funnel("sft")
    rows = sft_rows(3)
    rows[1]["completion"] = [{"role": "assistant", "content": "  "}]
    rows[2]["prompt"] = "not a conversation"
    assert len(conversation_rows(rows, funnel)) == 1
    assert funnel.dropped == {"malformed prompt/completion": 2}
