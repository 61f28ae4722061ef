"""Hostile-input and fault probes of the command line and the Python API, as a table.

Each probe runs in a fresh process (so a segfault or a hang is a row, not a crash of this
script) and reports its exit code, the last line it printed on stderr, whether a traceback
was printed, and its wall time. Signal probes report the time from the signal to the exit.
Python-API probes that end in a ParameterError exit 1 with its traceback: that is the API's
promise (a CLI probe promises exit 2 and one line).

    python benchmarks/edge_probes.py                 # this checkout
    python benchmarks/edge_probes.py --tree OLD_DIR  # another checkout (e.g. a git worktree)
    python benchmarks/edge_probes.py --markdown      # the table in Markdown
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _py(code):
    return [sys.executable, "-c", textwrap.dedent(code)]


def _cli(*args):
    return [sys.executable, "-m", "nqm_mc", *args]


def probes(tmp):
    """(name, command, signal or None, seconds before the signal)."""
    div = os.path.join(tmp, "div")
    bad_npz = os.path.join(tmp, "truncated.npz")
    flipped = os.path.join(tmp, "flipped.npz")
    empty = os.path.join(tmp, "empty.npz")
    csv = os.path.join(tmp, "nocols.csv")
    binary = os.path.join(tmp, "binary.toml")
    afile = os.path.join(tmp, "a_file")
    for path, data in ((bad_npz, b"PK\x03\x04" + os.urandom(200)), (empty, b""),
                       (csv, b"a,b\n1,2\n"), (binary, os.urandom(300)), (afile, b"x")):
        with open(path, "wb") as f:
            f.write(data)
    good = os.path.join(tmp, "good")
    return [
        ("simulate diverging (--lr 2.5)", _cli("simulate", "--dim", "100", "--runs", "32",
                                              "--steps", "2000", "--lr", "2.5", "--quiet",
                                              "--out", div), None, 0),
        ("simulate diverging --json", _cli("simulate", "--dim", "100", "--runs", "32",
                                           "--steps", "2000", "--lr", "2.5", "--quiet",
                                           "--json", "--out", div + "j"), None, 0),
        ("exact diverging (--lr 2.5)", _cli("exact", "--dim", "100", "--steps", "2000",
                                            "--lr", "2.5", "--out", div + "e"), None, 0),
        ("plot a diverged result", _cli("plot", os.path.join(div, "simulation.npz"), "--out",
                                        div + "p"), None, 0),
        ("user schedule too short: expected_loss", _py("""
            import numpy as np
            from nqm_mc import NQM, SGD, expected_loss
            from nqm_mc.spec.schedules import Schedule
            class Short(Schedule):
                def values(self, n):
                    return np.full(3, 0.1)
            print(expected_loss(NQM.paper(50), SGD(Short()), 8, 100).mean[-1])"""), None, 0),
        ("user schedule too short: simulate", _py("""
            import numpy as np
            from nqm_mc import NQM, SGD, simulate
            from nqm_mc.spec.schedules import Schedule
            class Short(Schedule):
                def values(self, n):
                    return np.full(3, 0.1)
            r = simulate(NQM.paper(50), SGD(Short()), 8, 100, 16, progress=False)
            print(r.n_diverged[-1], r.mean[-1])"""), None, 0),
        ("negative scheduled learning rate", _py("""
            import numpy as np
            from nqm_mc import NQM, SGD, expected_loss
            from nqm_mc.spec.schedules import Schedule
            class Neg(Schedule):
                def values(self, n):
                    return np.full(n, -0.1)
            print(expected_loss(NQM.paper(50), SGD(Neg()), 8, 100).mean[-1])"""), None, 0),
        ("loss_at(t = 2**63)", _py("""
            from nqm_mc import NQM, SGD, loss_at
            print(loss_at(NQM.paper(50), SGD(0.1), 8, 2**63))"""), None, 0),
        ("simulate batch 10**19, FiniteData(16)", _py("""
            from nqm_mc import NQM, SGD, simulate
            from nqm_mc.spec.noise import FiniteData
            r = simulate(NQM.paper(50), SGD(0.1), 10**19, 10, 16, noise=FiniteData(16),
                         progress=False)
            print(r.mean[-1])"""), None, 0),
        ("stability(batch_size='abc')", _py("""
            from nqm_mc import NQM, SGD, stability
            print(stability(NQM.paper(50), SGD(0.1), batch_size="abc"))"""), None, 0),
        ("SIGINT, d=1, 16 runs, 5e7 steps (step kernel)",
         _cli("simulate", "--dim", "1", "--runs", "16", "--steps", "50000000", "--method",
              "step", "--quiet", "--out", os.path.join(tmp, "int")), signal.SIGINT, 12),
        ("SIGTERM, d=1, 16 runs, 5e7 steps (step kernel)",
         _cli("simulate", "--dim", "1", "--runs", "16", "--steps", "50000000", "--method",
              "step", "--quiet", "--out", os.path.join(tmp, "term")), signal.SIGTERM, 12),
        ("d=1, 16 runs, 5e7 steps, default sampler", _cli(
            "simulate", "--dim", "1", "--runs", "16", "--steps", "50000000", "--quiet",
            "--out", os.path.join(tmp, "skip")), None, 0),
        ("--out is an existing file", _cli("simulate", "--dim", "20", "--steps", "20",
                                           "--runs", "16", "--quiet", "--out", afile), None,
         0),
        ("--out under /proc", _cli("simulate", "--dim", "20", "--steps", "20", "--runs", "16",
                                   "--quiet", "--out", "/proc/nqm_mc_probe"), None, 0),
        ("--out below a regular file", _cli("simulate", "--dim", "20", "--steps", "20",
                                            "--runs", "16", "--quiet", "--out",
                                            os.path.join(afile, "sub")), None, 0),
        ("--config is binary", _cli("simulate", "--config", binary, "--out", tmp), None, 0),
        ("--config is a directory", _cli("simulate", "--config", tmp, "--out", tmp), None, 0),
        ("plot a truncated .npz", _cli("plot", bad_npz, "--out", tmp), None, 0),
        ("plot an empty .npz", _cli("plot", empty, "--out", tmp), None, 0),
        ("plot a bit-flipped .npz", _py(f"""
            import subprocess, sys
            from nqm_mc import NQM, SGD, simulate
            simulate(NQM.paper(20), SGD(0.1), 8, 20, 16, progress=False).save({flipped!r})
            b = bytearray(open({flipped!r}, "rb").read())
            b[len(b) // 2] ^= 0xFF
            open({flipped!r}, "wb").write(bytes(b))
            r = subprocess.run([sys.executable, "-m", "nqm_mc", "plot", {flipped!r}, "--out",
                                {tmp!r}], capture_output=True, text=True)
            sys.stderr.write(r.stderr)
            sys.exit(r.returncode)"""), None, 0),
        ("plot a missing file", _cli("plot", os.path.join(tmp, "missing.npz"), "--out", tmp),
         None, 0),
        ("plot a CSV without its columns", _cli("plot", csv, "--out", tmp), None, 0),
        ("load_result of a JSON list", _py(f"""
            import json, numpy as np
            from nqm_mc import load_result
            json.dump([1, 2], open({good!r} + ".json", "w"))
            np.savez({good!r} + ".npz", steps=np.arange(3))
            print(load_result({good!r}))"""), None, 0),
        ("exact --steps 0", _cli("exact", "--dim", "20", "--steps", "0", "--out",
                                 os.path.join(tmp, "zero")), None, 0),
        ("exact --steps 10**12", _cli("exact", "--dim", "20", "--steps", str(10 ** 12),
                                      "--out", os.path.join(tmp, "huge")), None, 0),
        ("--scheduler pointing at nothing", _cli("simulate", "--dim", "20", "--steps", "20",
                                                 "--runs", "16", "--scheduler",
                                                 "tcp://127.0.0.1:1", "--out", tmp), None, 0),
        ("save('x.json') then load_result('x.json')", _py(f"""
            from nqm_mc import NQM, SGD, simulate, load_result
            p = {os.path.join(tmp, 'x.json')!r}
            simulate(NQM.paper(20), SGD(0.1), 8, 20, 16, progress=False).save(p)
            print(load_result(p).n_runs)"""), None, 0),
    ]


def run(tree, seconds_cap=180):
    env = dict(os.environ, PYTHONPATH=tree)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, cmd, sig, wait in probes(tmp):
            t0 = time.perf_counter()
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=env, cwd=tmp)
            t_sig = None
            try:
                if sig is not None:
                    time.sleep(wait)
                    t_sig = time.perf_counter()
                    p.send_signal(sig)
                out, err = p.communicate(timeout=seconds_cap)
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
                rows.append((name, "hung", f"killed after {seconds_cap} s", "", ""))
                continue
            end = time.perf_counter()
            lines = [ln for ln in err.strip().splitlines() if ln.strip()]
            last = lines[-1] if lines else (out.strip().splitlines() or [""])[-1]
            tb = "traceback" if "Traceback" in err else ""
            dt = f"{end - t_sig:.1f} s after signal" if t_sig else f"{end - t0:.1f} s"
            rows.append((name, str(p.returncode), last[:150], tb, dt))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", default=HERE, help="checkout to probe (default: this one)")
    ap.add_argument("--markdown", action="store_true")
    a = ap.parse_args(argv)
    rows = run(os.path.abspath(a.tree))
    if a.markdown:
        print("| probe | exit | last line | traceback | time |")
        print("|---|---|---|---|---|")
        for r in rows:
            print("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
    else:
        for r in rows:
            print(f"{r[0]:<42} {r[1]:>5} {r[4]:>22} {r[3]:>9}  {r[2]}")


if __name__ == "__main__":
    main()
