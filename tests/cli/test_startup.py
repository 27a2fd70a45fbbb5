"""`convlab --help`, `convlab CMD --help` and argument errors answer without importing torch or NumPy."""
import json
import subprocess
import sys

import pytest

CASES = [["--help"], ["train", "--help"], ["finetune", "--help"], ["tune", "--help"], ["serve", "--help"],
         ["explain", "conv", "--help"], ["compress", "--help"], ["attribute", "--help"], ["train", "--lr", "abc"],
         ["train", "--no-such-flag"], ["no-such-command"]]

# Runs each case through `python -m convlab` in one fresh interpreter and reports, per case, its exit code
# and which heavy modules were imported by then.
SCRIPT = """
import json, runpy, sys
report = []
for argv in json.loads(sys.argv[1]):
    sys.argv = ["convlab", *argv]
    try:
        runpy.run_module("convlab", run_name="__main__")
        code = 0
    except SystemExit as exit:
        code = exit.code
    report.append([argv, code, sorted(m for m in ("torch", "numpy", "PIL", "matplotlib") if m in sys.modules)])
print(json.dumps(report))
"""


@pytest.mark.slow
def test_help_and_argument_errors_do_not_import_torch_or_numpy():
    done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(CASES)], capture_output=True, text=True,
                          timeout=120)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert [(argv, code) for argv, code, _ in report] == [(argv, 0 if "--help" in argv else 2) for argv in CASES]
    assert [(argv, heavy) for argv, _, heavy in report] == [(argv, []) for argv in CASES]
