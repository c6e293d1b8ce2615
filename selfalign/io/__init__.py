"""Datasets in and out of every stage: a stage reads its input by path or Hub id and writes a resumable,
versioned output that `datasets.load_dataset(<dir>)` and the Hub viewer both read:

    <dir>/data/train-00000-of-00001.parquet   the rows
    <dir>/README.md                           dataset card (how the data was made, funnel)
    <dir>/funnel.png                          the funnel as a chart, shown in the card
    <dir>/provenance.json                     machine-readable version of the same
    <dir>/parts/<phase>/<chunk>.parquet|json  work in progress; a chunk is done when its .json exists

On the Hub, every stage is a config of the run's dataset repo, on `main` (the layout: `hub.py`); inputs are named
`where[:config][@revision]`.

The parts: inputs.py (reading an input), stage_run.py (a stage's output while it runs and once done),
provenance.py (library versions, the dataset card), hub.py (the run on the Hub), rows.py (rows that stay in Arrow
until used: the one parquet reader), files.py (atomic writes, hashes, the one JSONL reader).

Nothing is imported here: a part that needs only files.py (the charts) does not load the rest.
"""
