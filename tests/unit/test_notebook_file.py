"""notebooks/selfalign_colab.ipynb executed by papermill as a user would run it, at tiny sizes: CPU, offline,
the embedded model, a few seeds from a small local source folder, one instruction, short responses, one
training step on a small verified dataset (a tiny run verifies no sample), two HumanEval problems."""

from __future__ import annotations

import nbformat
from helpers import ROOT

NOTEBOOK = ROOT / "notebooks" / "selfalign_colab.ipynb"


def test_committed_notebook_has_no_outputs_and_a_parameters_cell():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "MODEL =" in tagged[0].source and "HUB_NAMESPACE =" in tagged[0].source
    for script in ("build_seeds.py", "gen_instructions.py", "gen_responses.py", "verify.py", "train_sft.py",
                   "evaluate.py"):
        assert sum(f'run("{script}"' in c.source for c in code) == 1, script  # calls the script, once
