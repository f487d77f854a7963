"""The test helper that forks ``python <script>`` runs from a preloaded server behaves as a real one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from script_runner import run_script

PROBE = """
import multiprocessing, os, sys, threading, time

def double(value):
    return 2 * value

if __name__ == "__main__":
    print("argv", sys.argv[1:], "cwd", os.getcwd(), "variable", os.environ.get("PROBE_VARIABLE"))
    print("path0", sys.path[0], "pythonpath", os.environ["PYTHONPATH"] in sys.path)
    print("start method", multiprocessing.get_start_method(), multiprocessing.current_process().name)
    print("parent", multiprocessing.parent_process())
    with multiprocessing.Pool(2) as pool:
        print("pool", pool.map(double, [1, 2]))
    late = threading.Thread(target=lambda: (time.sleep(0.2), print("thread finished", flush=True)))
    late.start()
    mode = sys.argv[1]
    if mode == "message":
        raise SystemExit("error: a one-line message")
    if mode == "code":
        sys.exit(3)
    if mode == "raise":
        raise ValueError("uncaught")
"""


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "code"), [("ok", 0), ("message", 1), ("code", 3), ("raise", 1)])
def test_a_forked_run_prints_and_exits_as_a_fresh_interpreter(tmp_path: Path, mode: str, code: int):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    env = {"PROBE_VARIABLE": "set", "PYTHONPATH": str(tmp_path / "extra"), "PATH": "/usr/bin:/bin"}
    real = subprocess.run(
        [sys.executable, str(script), mode, "x=1"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    forked = run_script(str(script), [mode, "x=1"], cwd=tmp_path, env=env)
    assert (forked.returncode, real.returncode) == (code, code)
    assert forked.stdout == real.stdout
    assert "start method fork MainProcess" in forked.stdout and "parent None" in forked.stdout
    assert "thread finished" in forked.stdout  # a non-daemon thread outlives the script, as at exit
    if mode == "raise":
        assert forked.stderr.startswith("Traceback") and forked.stderr.endswith("ValueError: uncaught\n")
    else:
        assert forked.stderr == real.stderr


@pytest.mark.slow
def test_a_run_past_its_timeout_is_killed_and_raises(tmp_path: Path):
    script = tmp_path / "sleeper.py"
    script.write_text("import time\nprint('started', flush=True)\ntime.sleep(60)\n")
    with pytest.raises(subprocess.TimeoutExpired) as expired:
        run_script(str(script), [], cwd=tmp_path, timeout=3)
    assert expired.value.stdout == "started\n"
