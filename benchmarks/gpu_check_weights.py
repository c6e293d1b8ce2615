"""The GPU check's verdict on a saved model (benchmarks/gpu_check.py): it loads, it is whole, it is trained, and it
is the model a reference run saved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SAVE_TOLERANCE = 0.05  # of the largest change training made: a save that missed a gather is off by 100% or more


class CheckFailed(Exception):
    """A check's one-line reason for failing."""


def one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def load_saved(folder: Path) -> dict[str, Any]:
    """A saved model folder's weights as from_pretrained loads them (fp32), refusing any loading problem."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        model, info = AutoModelForCausalLM.from_pretrained(  # pyright: ignore[reportGeneralTypeIssues]
            str(folder), output_loading_info=True, dtype=torch.float32)
    except (OSError, ValueError, RuntimeError) as err:
        raise CheckFailed(f"the saved model does not load: {one_line(str(err))}") from None
    problems = {kind: names for kind, names in info.items() if names}
    if problems:
        raise CheckFailed(f"loading the saved model reported {one_line(str(problems))}")
    return {name: tensor.detach().float().cpu() for name, tensor in model.state_dict().items()}


def compare_saved(folder: Path, initial: dict[str, Any] | None, reference: dict[str, Any] | None,
                  reference_required: bool = False) -> str:
    """A saved model against the one it was trained from (every weight there, at its shape, moved by training)
    and, when `reference_required`, against the reference run's (equal to SAVE_TOLERANCE of what training moved
    the weights). Returns what it measured."""
    import torch
    from safetensors import safe_open

    if initial is None:
        raise CheckFailed("no initial model to compare with (building the tiny model failed)")
    for file in sorted(folder.glob("*.safetensors")):  # the shapes as written, before from_pretrained objects
        with safe_open(str(file), "pt") as weights:
            for name in weights.keys():  # noqa: SIM118 (a safetensors file is no dict)
                shape = tuple(weights.get_slice(name).get_shape())
                if name in initial and shape != tuple(initial[name].shape):
                    raise CheckFailed(f"{name} saved as {shape}, not {tuple(initial[name].shape)}")
    saved = load_saved(folder)
    if sorted(saved) != sorted(initial):
        raise CheckFailed(f"saved weights {sorted(set(saved) ^ set(initial))[:4]} differ from the model's")
    for name, tensor in saved.items():
        if not torch.isfinite(tensor).all():
            raise CheckFailed(f"{name} holds NaN or inf")
        if torch.equal(tensor, initial[name]):
            raise CheckFailed(f"{name} is the initial random weight: not trained, or not the trained copy saved")
    moved = max(float((saved[n] - initial[n]).abs().max()) for n in saved)
    if not reference_required:
        return f"max |trained - initial| {moved:.1e}"
    if reference is None:
        raise CheckFailed("no reference run to compare with (the single-device fp32 run failed)")
    reference_moved = max(float((reference[n] - initial[n]).abs().max()) for n in saved)
    worst = max(saved, key=lambda n: float((saved[n] - reference[n]).abs().max()))
    off = float((saved[worst] - reference[worst]).abs().max())
    if off > SAVE_TOLERANCE * reference_moved:
        raise CheckFailed(f"{worst} is {off:.1e} from the reference run's, which training moved {reference_moved:.1e}")
    return f"equals the reference to {off:.1e} (training moved weights {reference_moved:.1e})"
