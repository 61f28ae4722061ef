"""The package's import graph (``python tools/import_graph.py``) has no cycles, counting
deferred imports and imports for type checking."""

import importlib.util
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def _tool():
    path = ROOT / "tools" / "import_graph.py"
    spec = importlib.util.spec_from_file_location("import_graph", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_no_import_cycles():
    tool = _tool()
    graph = tool.build_graph()
    # the graph is the package's: the edges that the layers are made of are there
    assert graph["nqm_mc.cli.exact"]["nqm_mc.cli._experiment"] == "top"
    assert graph["nqm_mc.montecarlo.distributed"]["nqm_mc.montecarlo.blocks"] == "typing"
    assert graph["nqm_mc.results"]["nqm_mc._files"] == "deferred"
    assert "nqm_mc.montecarlo.distributed" not in graph["nqm_mc.montecarlo.driver"]
    assert "nqm_mc.montecarlo.distributed" not in graph["nqm_mc.montecarlo.blocks"]
    # predict reads a calibration through the Fitted protocol of the module both import
    assert graph["nqm_mc.calibration.predict"]["nqm_mc.calibration.evaluate"] == "top"
    assert "nqm_mc.calibration.result" not in graph["nqm_mc.calibration.predict"]
    assert tool.cycles(graph) == []


def _package(tmp_path, files):
    for name, text in files.items():
        path = tmp_path / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return tmp_path


def test_the_tool_finds_every_kind_of_cycle(tmp_path):
    """Power check: a cycle closed at the top, in a function or for type checking is found,
    and an acyclic package is not reported."""
    tool = _tool()
    closers = {
        "top": "from pkg import a\n",
        "deferred": "def f():\n    from pkg.a import x\n    return x\n",
        "typing": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n",
    }
    for kind, text in closers.items():
        root = _package(tmp_path / kind, {"__init__.py": "", "a.py": "import pkg.b\nx = 1\n",
                                          "b.py": text, "c.py": "from pkg import b\n"})
        graph = tool.build_graph(root, ("pkg",))
        assert graph["pkg.b"]["pkg.a"] == kind
        assert tool.cycles(graph) == [["pkg.a", "pkg.b", "pkg.a"]], kind
    root = _package(tmp_path / "none", {"__init__.py": "from pkg.a import x\n",
                                        "a.py": "x = 1\n", "b.py": "from pkg import a, x\n"})
    graph = tool.build_graph(root, ("pkg",))
    assert graph["pkg.b"] == {"pkg.a": "top", "pkg": "top"}
    assert tool.cycles(graph) == []


def test_the_command_prints_the_graph(capsys):
    tool = _tool()
    status = tool.main([])
    out = capsys.readouterr().out
    assert "nqm_mc.cli.simulate -> " in out and " modules, " in out
    assert status == 0
    assert out.rstrip().endswith(" 0 cycles")
