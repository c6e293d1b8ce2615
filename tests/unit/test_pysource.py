from selfalign.pysource import extract_seeds

SOURCE = '''
import json
import os
import re as regex
from collections import OrderedDict, deque as dq
from math import *

THRESHOLD = 3


def debug_format(value):
    """Render `value` as indented JSON for debug output."""
    return json.dumps(value, indent=2)


def pending(items):
    """Return the items still to do.  TODO: handle None."""
    return [i for i in items if i]


def has_bug_marker(x):
    """Return x doubled."""
    # fixme later
    return x * 2


def env_path(name):
    """Return the path stored in an environment variable."""
    return os.environ[name]


def no_doc(x):
    return x


def no_args():
    """Return one."""
    return 1


def prints(x):
    """Print x."""
    print(x)


def words(text):
    """Split `text` into words and count them in first-seen order."""
    counts = OrderedDict()
    for w in regex.findall(r"\\w+", text):
        counts[w] = counts.get(w, 0) + 1
    return counts, dq(counts)


async def fetch(x):
    """Fetch x."""
    return x


def inner_return_only(x):
    """Nested return does not count."""
    def helper():
        return x
    helper()
'''


def results():
    return {(seed.name if seed else None, reason) for seed, reason in extract_seeds(SOURCE)}


def test_filters_each_reason():
    got = [(seed.name if seed else None, reason) for seed, reason in extract_seeds(SOURCE)]
    assert got == [
        ("debug_format", "kept"),  # `debug` is not the word `bug`
        (None, "TODO/FIXME/bug marker"),
        (None, "TODO/FIXME/bug marker"),
        (None, "banned import"),
        (None, "no docstring"),
        (None, "no arguments"),
        (None, "no return value"),
        ("words", "kept"),
        (None, "async function"),
        (None, "no return value"),
    ]


def test_seeds_carry_only_the_imports_they_use():
    seeds = {s.name: s for s, _ in extract_seeds(SOURCE) if s}
    assert seeds["debug_format"].imports == ("import json",)
    assert seeds["debug_format"].content.startswith("import json\n\n\ndef debug_format(value):")
    assert set(seeds["words"].imports) == {"import re as regex", "from collections import OrderedDict",
                                            "from collections import deque as dq"}
    compile(seeds["words"].content, "<seed>", "exec")


def test_length_cap_and_custom_banned_list():
    long_body = "\n".join(f"    x += {i}" for i in range(160))
    source = f'import json\n\ndef long(x):\n    """Add."""\n{long_body}\n    return x\n\n' \
             'def dump(x):\n    """Dump."""\n    return json.dumps(x)\n'
    got = [reason for _, reason in extract_seeds(source, banned_imports=["json"])]
    assert got == ["over 150 lines", "banned import"]
