"""Run a repository script as ``python <script> <args>`` would, without paying its imports each time.

A fresh Python process that imports ``ocl.cli`` spends 7-9 s in imports on a slow 2-core machine
(``import lightning`` alone is ~7 s: torchmetrics, torchvision, torch._dynamo, scipy), and the suite
starts ~35 of them. :func:`run_script` forks each run from a server process that imported those
modules once (``multiprocessing``'s ``forkserver``). The child is still a separate process with its
own exit code, streams, working directory and environment; what differs from ``python <script>``:

- the preloaded modules were imported once, in the server, with the environment this process had
  when it started the server: a variable they read at import time keeps that value;
- ``OMP_NUM_THREADS`` and ``PYTHONPATH`` of ``env`` are applied by hand (the OpenMP runtime and
  ``sys.path`` read them at interpreter start): ``torch.set_num_threads``, and ``sys.path`` is the
  script's folder, then ``PYTHONPATH``, then this process's path (which includes ``tests/``);
- multiprocessing is reset to a fresh interpreter's state (default start method, a main process).

Tests that start workers of their own with ``torch.multiprocessing`` use the same server
(``start_method="forkserver"``): importing this module sets its preload.

Forking is safe here because the server never ran a parallel torch operation: a fork of a process
whose OpenMP thread pool already ran can deadlock in the child's first parallel region (the reason
tests fork nothing from the pytest process itself).
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import runpy
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from multiprocessing.process import BaseProcess
from pathlib import Path

PRELOAD = ["torch", "hydra", "lightning", "ocl.cli"]
"""Modules the fork server imports once: what every entry point imports first."""

_MAIN_PROCESS_TYPE = type(multiprocessing.current_process())
"""The class of an interpreter's own process object (private to multiprocessing; this module is
imported by the child before multiprocessing replaces that object with the child's)."""

_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(PRELOAD)


def start_script(
    script: str, args: list[str], cwd: Path, stdout: Path, stderr: Path, env: Mapping[str, str] | None = None
) -> BaseProcess:
    """Start ``python <script> <args>`` in ``cwd`` with ``env`` (default: this process's), its streams
    written to ``stdout`` and ``stderr`` (one file when both name it); signal it through its ``pid``."""
    process = _context.Process(
        target=_run_as_main,
        args=(script, args, str(cwd), dict(os.environ if env is None else env), str(stdout), str(stderr)),
    )
    process.start()
    return process


def run_script(
    script: str, args: list[str], cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``subprocess.run([sys.executable, script, *args], cwd=cwd, env=env, capture_output=True,
    text=True, timeout=timeout, check=False)``, forked from the preloaded server.

    Raises:
        subprocess.TimeoutExpired: the run outlived ``timeout`` seconds (it is killed first).
    """
    command = [sys.executable, script, *args]
    with tempfile.TemporaryDirectory(prefix="ocl_script_") as folder:
        stdout, stderr = Path(folder) / "stdout", Path(folder) / "stderr"
        process = start_script(script, args, cwd, stdout, stderr, env)
        process.join(timeout)
        if process.exitcode is None:
            process.kill()
            process.join()
            raise subprocess.TimeoutExpired(command, timeout, stdout.read_text(), stderr.read_text())
        return subprocess.CompletedProcess(command, process.exitcode, stdout.read_text(), stderr.read_text())


def _run_as_main(script: str, args: list[str], cwd: str, env: dict[str, str], stdout: str, stderr: str) -> None:
    """In the forked child: become ``python <script> <args>`` and exit with its exit code."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    _redirect_streams(stdout, stderr)
    extra_paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [str(Path(script).resolve().parent), *extra_paths, *sys.path[1:]]
    sys.argv = [script, *args]
    # A fresh interpreter's multiprocessing state: the platform's default start method (a child of
    # the server defaults to forkserver) and a main process without a parent.
    multiprocessing.set_start_method(None, force=True)
    multiprocessing.process._current_process = _MAIN_PROCESS_TYPE()
    multiprocessing.process._parent_process = None
    if "OMP_NUM_THREADS" in env:
        import torch

        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as stop:
        code = _exit_code(stop)
    except BaseException:  # noqa: BLE001 - what the interpreter does with any uncaught exception
        sys.excepthook(*sys.exc_info())
        code = 1
    threading._shutdown()  # the interpreter's exit: wait for non-daemon threads, then run atexit
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _redirect_streams(stdout: str, stderr: str) -> None:
    """Point file descriptors 1 and 2 at the files (one open file when the paths are equal)."""
    out = os.open(stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    err = out if stderr == stdout else os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.close(out)
    if err != out:
        os.close(err)


def _exit_code(stop: SystemExit) -> int:
    """The status ``python`` exits with for ``SystemExit(stop.code)``; a message goes to stderr."""
    if stop.code is None:
        return 0
    if isinstance(stop.code, int):
        return stop.code
    print(stop.code, file=sys.stderr)
    return 1
