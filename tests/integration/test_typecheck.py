import random
import stat
import sys
from pathlib import Path

from selfalign.pysource import extract_seeds
from selfalign.typecheck import TypeCheckStats, pyright_command, typecheck

CLEAN = 'import math\n\n\ndef hyp(a: float, b: float) -> float:\n    """Hypotenuse."""\n    return math.sqrt(a * a + b * b)\n'


TYPE_ERROR = 'def half(n: int) -> int:\n    """Half of n."""\n    return n.upper()\n'


UNDEFINED = 'def use(x):\n    """Use a module global that the seed did not carry."""\n    return _helper(x)\n'


MISSING_IMPORT = 'import not_a_real_module_xyz\n\n\ndef f(x):\n    """F."""\n    return not_a_real_module_xyz.g(x)\n'


def test_pyright_verdicts_on_real_code_serial_and_parallel_agree():
    from helpers import SAMPLE_MODULES, STDLIB

    seeds = [seed.content for name in SAMPLE_MODULES for seed, _ in extract_seeds((STDLIB / name).read_text()) if seed]
    sources = [CLEAN, TYPE_ERROR, UNDEFINED, MISSING_IMPORT, *random.Random(0).sample(seeds, 16)]
    verdicts = typecheck(sources, batch_size=10, workers=1)  # 2 batches, one after the other
    assert typecheck(sources, batch_size=10, workers=2) == verdicts  # the same 2 batches at once
    assert sum(v is None for v in verdicts[4:]) >= 3 and sum(v is not None for v in verdicts[4:]) >= 3
    assert verdicts[0] is None
    assert verdicts[1] is not None and "upper" in verdicts[1]
    assert verdicts[2] is not None and verdicts[2].startswith("reportUndefinedVariable")
    assert verdicts[3] is not None and verdicts[3].startswith("reportMissingImports")


def test_a_crashing_batch_is_bisected_not_dropped(tmp_path: Path):
    # a real pyright behind a wrapper that dies (SIGSEGV) whenever its batch holds the poisoned file
    wrapper = tmp_path / "crashy-pyright"
    wrapper.write_text(f"""#!{sys.executable}
import os, pathlib, signal, sys
project = pathlib.Path(sys.argv[sys.argv.index("-p") + 1])
if any("POISON" in p.read_text() for p in project.glob("*.py")):
    os.kill(os.getpid(), signal.SIGSEGV)
os.execv({pyright_command()[0]!r}, [{pyright_command()[0]!r}, *sys.argv[1:]])
""")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    poisoned = CLEAN.replace('"""Hypotenuse."""', '"""Hypotenuse. POISON"""')
    sources = [CLEAN, TYPE_ERROR, CLEAN, poisoned, CLEAN, UNDEFINED, CLEAN, CLEAN]
    stats = TypeCheckStats()
    verdicts = typecheck(sources, batch_size=8, command=[str(wrapper)], stats=stats, workers=1)
    assert verdicts[3] is not None and verdicts[3].startswith("pyright failed on this file")
    assert [v is None for i, v in enumerate(verdicts) if i != 3] == [True, False, True, True, False, True, True]
    assert stats.crashed_files == 1
    assert stats.failed_batches == 4  # 8 -> 4 -> 2 -> 1 poisoned halves failed
    parallel = TypeCheckStats()  # the same bisection, each pair of halves checked at once
    assert typecheck(sources, batch_size=8, command=[str(wrapper)], stats=parallel, workers=2) == verdicts
    assert (parallel.crashed_files, parallel.failed_batches, parallel.processes) == (1, 4, 7)
