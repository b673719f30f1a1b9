"""`ml-demo serve` stops on SIGINT even when it inherited SIGINT ignored (started in the
background by a script, or forked while another thread of its parent was in system(3)):
the full suite once left two such servers running after their test timed out."""

from __future__ import annotations

import signal
import subprocess
import sys


def test_serve_stops_on_sigint_even_if_started_with_sigint_ignored(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "ml_demo_dagster.cli", "serve", "--store", str(tmp_path), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip
    try:
        assert "listening on http://127.0.0.1:" in proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "ml-demo serve: stopped" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
