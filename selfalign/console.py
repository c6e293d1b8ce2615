"""What a running stage prints on stderr: its log lines and progress bars (rate and ETA)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

log = logging.getLogger("selfalign")


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    # one INFO line per HTTP request to the engine buries the stage's own lines; failures are ours to report
    for noisy in ("httpx", "httpx2", "httpcore"):  # huggingface_hub talks through httpx2
        logging.getLogger(noisy).setLevel(logging.WARNING)


def progress_bar(desc: str, total: int | None = None, unit: str = "it") -> tqdm:
    """A tqdm bar (rate and ETA) on stderr; quieter refresh when stderr is not a terminal (CI logs)."""
    return tqdm(desc=desc, total=total, unit=unit, mininterval=0.2 if sys.stderr.isatty() else 10.0, file=sys.stderr)


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    with progress_bar(desc, total, unit) as bar:
        for item in items:
            yield item
            bar.update()
