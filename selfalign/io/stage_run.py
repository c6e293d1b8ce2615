"""A stage's output directory while it runs and once it is done: resumable chunks (parts), shards, the final
dataset with its card and provenance, and its push to the run's Hub repo (layout: `hub.py`).

A stage's work is cut into chunks with stable numbers. Each finished chunk is written atomically with its
funnel counts, so a killed run resumes at the first unfinished chunk and a cluster splits chunks by position:
shard i of N does the chunks at positions i, i+N, i+2N... (datatrove's ranks, in miniature).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from selfalign.charts import write_funnel_chart
from selfalign.config import RunArguments
from selfalign.console import log, progress_bar
from selfalign.errors import fail
from selfalign.funnel import Funnel
from selfalign.io.files import atomic_write, file_sha256, write_parquet
from selfalign.io.hub import commit, has_tag
from selfalign.io.provenance import library_versions, render_card
from selfalign.io.rows import ParquetRows, Rows, write_parquet_files

POLL_SECONDS = 2.0  # how often a process of a launch looks for its siblings' parts
VOLATILE_ARGS = {"output_dir", "overwrite", "push_to_hub", "hub_private", "shard_index", "num_shards"}


class StageRun:
    """One stage's output directory: resumable chunks while running, then the final dataset and card."""

    def __init__(self, stage: str, script: str, run_args: RunArguments, config: Mapping[str, Any],
                 inputs: Mapping[str, Any]) -> None:
        self.stage = stage
        self.script = script
        self.run_args = run_args
        self.dir = run_args.stage_output_dir(stage)
        self.config = dict(config)
        self.inputs = dict(inputs)
        stable = {k: v for k, v in self.config.items() if k not in VOLATILE_ARGS}
        blob = json.dumps({"stage": stage, "config": stable, "inputs": self.inputs}, sort_keys=True, default=str)
        self.version = hashlib.sha256(blob.encode()).hexdigest()[:12]
        self.started = time.time()
        if not 0 <= run_args.shard_index < run_args.num_shards:
            fail(f"--shard_index must be in [0, {run_args.num_shards}), got {run_args.shard_index}")
        # under `accelerate launch`/torchrun every process is a shard of its own (within --shard_index)
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.num_shards = run_args.num_shards * self.world
        self.shard_index = run_args.shard_index * self.world + self.rank
        self._file_lock: Any = None

    @property
    def finalizer(self) -> bool:
        """Whether this process may write the final output (process 0 of a launch; any shard of a cluster, the
        one that claims it first: see `claim_output`)."""
        return self.rank == 0

    # -- lifecycle

    def _lock(self) -> Any:
        """A lock beside the output directory (`.<name>.lock`): shards starting together take turns to check and
        claim it, and the one writing the output holds it until it is written. The kernel releases it if its
        holder dies, so a killed shard never leaves it stuck. Kept on the run: a FileLock no longer referenced
        releases itself; one instance per path in a process, so it is reentrant."""
        if self._file_lock is None:
            self.dir.parent.mkdir(parents=True, exist_ok=True)
            self._file_lock = FileLock(self.dir.parent / f".{self.dir.name}.lock", is_singleton=True)
        return self._file_lock

    def _acquire(self, what: str) -> Any:
        """Take the lock, saying so when another process holds it (it may for a while: writing the output).
        As a context manager, what it returns releases this acquisition on exit."""
        try:
            return self._lock().acquire(timeout=0)
        except Timeout:
            log.info("shard %d/%d: another shard holds the lock of %s (%s): waiting for it", self.shard_index,
                     self.num_shards, self.dir, what)
            return self._lock().acquire()

    def complete(self) -> bool:
        """Open the directory (`open`); True when this version is already complete, and then nothing is left to
        do but a push that did not land: asked to push, process 0 of shard 0 pushes it unless the repo already
        carries its tag (a rerun after a failed push pushes; one after a good push changes nothing)."""
        if self.open():
            return False
        log.info("%s is complete (version %s); nothing to do", self.dir, self.version)
        repo_id = self.run_args.push_to_hub
        if repo_id and self.shard_index == 0:
            if has_tag(repo_id, "dataset", self.tag):
                log.info("%s is on the Hub already (%s, tag %s)", self.stage, repo_id, self.tag)
            else:
                self.push(repo_id)
        return True

    def open(self) -> bool:
        """Prepare the directory. Returns False when this exact version is already complete.

        Every shard and every process of a launch opens it for itself, under the lock: the first one creates
        (or, with --overwrite, replaces) it and writes its claim `run.json`; the others find their own version
        there and join it. --overwrite replaces only an output of another version, so a shard started with it
        never deletes the parts of a sibling running the same command."""
        with self._acquire("opening it or writing the output"):
            return self._open_here()

    def _open_here(self) -> bool:
        run_file = self.dir / "run.json"
        if run_file.exists():
            previous = json.loads(run_file.read_text())
            if previous.get("version") != self.version:
                if not self.run_args.overwrite:
                    fail(f"{self.dir} holds a {self.stage} run made with other arguments or inputs "
                         f"(version {previous.get('version')}, now {self.version}): pass --overwrite to replace it "
                         "or choose another --output_dir/--run_name")
                log.info("overwriting %s (version %s -> %s)", self.dir, previous.get("version"), self.version)
                shutil.rmtree(self.dir)
            elif self.finished():
                return False
        elif self.dir.exists() and any(self.dir.iterdir()) and not self.run_args.overwrite:
            fail(f"{self.dir} exists and was not written by selfalign: pass --overwrite or another --output_dir")
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(run_file, json.dumps({"stage": self.stage, "version": self.version}).encode())
        return True

    # -- chunks

    def mine(self, chunks: Sequence[int]) -> list[int]:
        """This shard's chunks among all of a phase's, given in order: every `num_shards`-th by position, so
        each shard gets 1/N of them (±1) whatever the chunks are numbered by (start rows, file-chunk counters)."""
        return [c for i, c in enumerate(chunks) if self.is_mine(i)]

    def is_mine(self, ordinal: int) -> bool:
        """Whether this shard does the chunk at position `ordinal` (0, 1, 2... in input order)."""
        return ordinal % self.num_shards == self.shard_index

    def finished(self) -> bool:
        """Whether this version's final output is written (its parts are gone then)."""
        try:
            return json.loads((self.dir / "provenance.json").read_text()).get("version") == self.version
        except (OSError, ValueError):
            return False

    def _part(self, phase: str, chunk: int, suffix: str) -> Path:
        return self.dir / "parts" / phase / f"{chunk:06d}{suffix}"

    def done(self, phase: str, chunk: int) -> bool:
        return self._part(phase, chunk, ".json").exists()

    def missing(self, phase: str, chunks: Iterable[int]) -> list[int]:
        return [c for c in chunks if not self.done(phase, c)]

    def write_part(self, phase: str, chunk: int, rows: Sequence[Mapping[str, Any]], funnel: Funnel) -> None:
        """Save a finished chunk: rows first, then its counts, whose presence marks the chunk done."""
        folder = self.dir / "parts" / phase
        folder.mkdir(parents=True, exist_ok=True)
        write_parquet(self._part(phase, chunk, ".parquet"), rows)
        atomic_write(self._part(phase, chunk, ".json"), json.dumps(funnel.to_dict()).encode())

    def read_parts(self, phase: str, chunks: Iterable[int], funnel: Funnel | None = None) -> list[dict[str, Any]]:
        """Rows of finished chunks, in chunk order, as dicts; their counts are added to `funnel`."""
        return list(self.parts(phase, chunks, funnel))

    def parts(self, phase: str, chunks: Iterable[int], funnel: Funnel | None = None) -> ParquetRows:
        """Rows of finished chunks, in chunk order, left on disk until read; their counts are added to `funnel`."""
        files = []
        try:
            for chunk in chunks:
                files.append(self._part(phase, chunk, ".parquet"))
                if funnel is not None:
                    funnel.add(json.loads(self._part(phase, chunk, ".json").read_text()))
            return ParquetRows(files)
        except FileNotFoundError:
            if not self.finished():
                raise
            # another process of the launch finished the output meanwhile (and dropped the parts): nothing is left
            log.info("%s was finished by another process", self.dir)
            raise SystemExit(0) from None

    def map_chunks(self, phase: str, rows: Sequence[Any], chunk_size: int,
                   process: Callable[[list[Any], Funnel], list[dict[str, Any]]], *, desc: str,
                   backend: Any = None) -> bool:
        """Run `process` on each of this shard's unfinished chunks of `rows` (a chunk is named by its start row),
        saving each as a part with its funnel (time, and model tokens when `backend` has `stats`). Returns True
        when this process is to write the final output: it is the finalizer, every chunk is done and it holds the
        claim to the output (`claim_output`), so exactly one process of all shards gets True."""
        starts = list(range(0, len(rows), chunk_size))
        todo = self.todo(phase, starts)
        log.info("shard %d/%d: %d of %d %s chunks left to do", self.shard_index, self.num_shards, len(todo),
                 len(starts), phase)
        with progress_bar(desc, sum(min(chunk_size, len(rows) - s) for s in todo), unit="row") as bar:
            for start in todo:
                self._run_chunk(phase, start, list(rows[start : start + chunk_size]), process, backend, bar)
        return self.finalizer and self.all_done(phase, starts) and self.claim_output()

    def todo(self, phase: str, chunks: Sequence[int]) -> list[int]:
        """This shard's chunks of `phase` not done yet, in order. None once the output is finished: its parts
        are gone then, and would look undone to a shard that opened the output before another finished it."""
        left = [c for c in self.mine(chunks) if not self.done(phase, c)]
        return [] if left and self.finished() else left

    def all_done(self, phase: str, chunks: Sequence[int]) -> bool:
        """Whether every chunk of `phase` (all of them, in order) is done.

        A process of an `accelerate launch` first waits for the chunks of the launch's other processes by
        polling their parts on disk rather than in a collective barrier: however long the slowest rank takes,
        no NCCL/gloo timeout ends the wait (if a rank dies, the launcher stops the others). Chunks of other
        `--num_shards` shards are not waited for: this shard says what remains and a later run finishes."""
        launch = [c for i, c in enumerate(chunks) if (i % self.num_shards) // self.world == self.run_args.shard_index]
        while self.world > 1 and self.missing(phase, launch) and not self.finished():
            time.sleep(POLL_SECONDS)
        if self.finished():
            log.info("%s was finished by another shard: nothing left to do", self.dir)
            return False
        waiting = self.missing(phase, chunks)
        if waiting:
            log.info("shard %d/%d done; %d %s chunks remain for other shards: run again once they finish",
                     self.shard_index, self.num_shards, len(waiting), phase)
        return not waiting

    def claim_output(self) -> bool:
        """Whether this process is the one to write the final output, once every chunk is done. Shards finding
        every chunk done at the same moment each ask: the first takes the lock and keeps it until `publish` has
        written the output (and dropped the parts the others would read); the others wait for it, find the
        output written and get False. If the holder dies, the kernel frees the lock and the next one writes."""
        self._acquire("every chunk is done: it writes the output")
        if self.finished():
            self._lock().release()
            log.info("%s was finished by another shard: nothing left to do", self.dir)
            return False
        return True

    def _run_chunk(self, phase: str, start: int, chunk: list[Any],
                   process: Callable[[list[Any], Funnel], list[dict[str, Any]]], backend: Any, bar: Any) -> None:
        part, started = Funnel(self.stage), time.time()
        stats = getattr(backend, "stats", None)  # None until a lazily loaded model is loaded
        tokens0, seconds0 = (stats.tokens, stats.seconds) if stats else (0, 0.0)
        out = process(chunk, part)
        stats = getattr(backend, "stats", None)
        if stats:
            part.tokens, part.model_seconds = stats.tokens - tokens0, stats.seconds - seconds0
            bar.set_postfix_str(f"{part.tokens / max(part.model_seconds, 1e-9):.0f} tok/s", refresh=False)
        part.seconds = time.time() - started
        self.write_part(phase, start, out, part)
        bar.update(len(chunk))

    # -- final output

    def finalize(self, rows: Sequence[Mapping[str, Any]] | Rows, funnel: Funnel, *, description: str,
                 model: Mapping[str, Any] | None = None, prompt_files: Sequence[Path] = (),
                 license: str = "other", rows_per_file: int = 100_000,
                 extra: Mapping[str, Sequence[Mapping[str, Any]] | Rows] | None = None) -> Path:
        """Write the dataset (`train`, plus any `extra` named configs such as per-sample verdicts), its card
        and provenance, then drop the parts. Returns the directory. `Rows` (parts, an input) are copied
        a row group at a time, never all in memory; a list of dicts is written a file at a time."""
        data_dir = self.dir / "data"
        if data_dir.exists():
            shutil.rmtree(data_dir)
        data_dir.mkdir(parents=True)
        for name, table in {"train": rows, **(extra or {})}.items():
            if isinstance(table, Rows):
                write_parquet_files(data_dir, name, table, rows_per_file)
                continue
            n_files = max(1, -(-len(table) // rows_per_file))
            for i in range(n_files):
                write_parquet(data_dir / f"{name}-{i:05d}-of-{n_files:05d}.parquet",
                               table[i * rows_per_file : (i + 1) * rows_per_file])
        funnel.rows_out = len(rows)
        provenance = {
            "stage": self.stage,
            "script": self.script,
            "version": self.version,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "arguments": self.config,
            "inputs": self.inputs,
            "model": dict(model) if model else None,
            "prompt_files": {p.name: file_sha256(p) for p in prompt_files},
            "libraries": library_versions(),
            "funnel": funnel.to_dict(),
            "wall_seconds_this_run": round(time.time() - self.started, 1),
            "rows": len(rows),
            "columns": sorted(rows.column_names if isinstance(rows, Rows) and len(rows) else
                              {k for r in rows[:1000] for k in r}),
            "extra_configs": {name: len(table) for name, table in (extra or {}).items()},
        }
        atomic_write(self.dir / "provenance.json", json.dumps(provenance, indent=2, default=str).encode())
        write_funnel_chart(self.dir, provenance["funnel"])
        atomic_write(self.dir / "README.md", render_card(provenance, funnel, description, license).encode())
        shutil.rmtree(self.dir / "parts", ignore_errors=True)
        return self.dir

    def publish(self, rows: Sequence[Mapping[str, Any]] | Rows, funnel: Funnel, summary: str, **card: Any) -> None:
        """Finalize, print the funnel and a one-line summary, and push when `--push_to_hub` asks for it. Under
        the lock, which `claim_output` took (then it is released here, the claim with it) or this call takes."""
        self._acquire("writing the output")
        try:
            if self.finished():
                log.info("%s was finished by another shard: nothing left to do", self.dir)
                return
            self.finalize(rows, funnel, **card)
        finally:
            self._lock().release(force=True)
        print(funnel.render_text())
        print(f"{self.stage}: {summary} in {self.dir}")
        if self.run_args.push_to_hub:
            self.push(self.run_args.push_to_hub)

    def hub_files(self) -> tuple[dict[str, Path | bytes], list[str]]:
        """This finished output as files of the run's Hub dataset repo (layout: `hub.py`):
        {path in repo: local file} and the configs it holds (the stage's, plus `verdicts` for verified)."""
        files: dict[str, Path | bytes] = {}
        configs = [self.stage]
        for path in sorted((self.dir / "data").glob("*.parquet")):
            name, shard = path.name.split("-", 1)  # train-00000-of-00001.parquet, verdicts-00000-of-00001.parquet
            config = self.stage if name == "train" else name
            files[f"{config}/train-{shard}"] = path
            configs += [config] if config not in configs else []
        for name in ("README.md", "provenance.json", "funnel.png"):  # the stage's card shows its funnel chart
            if (self.dir / name).is_file():
                files[f"{self.stage}/{name}"] = self.dir / name
        return files, configs

    @property
    def tag(self) -> str:
        """The Hub tag of this version's push."""
        return f"{self.stage}-{self.version}"

    def push(self, repo_id: str) -> str:
        """Publish the finished output as config(s) on `main` of the run's Hub dataset repo, in one commit tagged
        `<stage>-<version>`; returns its sha."""
        files, configs = self.hub_files()
        return commit(repo_id, "dataset", files, owned=lambda f: f.split("/")[0] in configs,
                      tag=self.tag, message=f"{self.stage} {self.version} ({self.script})",
                      private=self.run_args.hub_private, configs=configs)
