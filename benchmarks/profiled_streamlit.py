"""``streamlit`` with every script run profiled (cProfile), for ``benchmarks/click_breakdown.py``.

Usage: ``SOMAD_PROFILE_DIR=/tmp/prof python benchmarks/profiled_streamlit.py run app.py ...``: each
script run (a full run or a fragment rerun) writes ``<n>-<full|fragment>.prof`` there. Profiling
slows Python code down (about 1.5x), so use the shares, not the absolute times.
"""
from __future__ import annotations

import cProfile
import os
import sys
from pathlib import Path

from streamlit.runtime.scriptrunner import script_runner

OUT = Path(os.environ["SOMAD_PROFILE_DIR"])
_original = script_runner.ScriptRunner._run_script
_count = [0]


def _profiled(self, rerun_data):
    prof = cProfile.Profile()
    prof.enable()
    try:
        return _original(self, rerun_data)
    finally:
        prof.disable()
        _count[0] += 1
        kind = "fragment" if rerun_data.fragment_id_queue else "full"
        prof.dump_stats(str(OUT / f"{_count[0]:04d}-{kind}.prof"))


script_runner.ScriptRunner._run_script = _profiled

if __name__ == "__main__":
    from streamlit.web.cli import main

    sys.argv = ["streamlit", *sys.argv[1:]]
    main()
