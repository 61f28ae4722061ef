"""One registry of optimizers and one of noise laws: the command line, the config parser and
both engines enumerate them, so a new entry is covered by these tests without another line."""

import numpy as np
import pytest

from nqm_mc import NQM, ParameterError, cli, config, expected_loss, simulate
from nqm_mc.spec import codes
from nqm_mc.spec.noise import NOISES
from nqm_mc.spec.optimizers import OPTIMIZERS

NAMES = sorted(k for k, cls in OPTIMIZERS.items() if cls.name == k)  # aliases left out
MODEL = NQM.paper(20)


def _build(name):
    cls = OPTIMIZERS[name]
    kw = {"momentum": 0.5} if "momentum" in cls.__dataclass_fields__ else {}
    return cls(0.01, **kw)


def test_codes_are_unique_and_linear_kinds_come_first():
    kinds = {OPTIMIZERS[n].kind_code for n in NAMES}
    assert len(kinds) == len(NAMES)
    for n in NAMES:
        linear = OPTIMIZERS[n].kind_code <= codes.LAST_LINEAR_KIND
        assert _build(n).is_linear == linear, n
    assert len({cls.code for cls in NOISES.values()}) == len(NOISES)


def test_command_line_lists_the_registries():
    parser = cli.build_parser()
    sim = next(a for a in parser._subparsers._group_actions[0].choices["simulate"]._actions
               if a.dest == "optimizer")
    noise = next(a for a in parser._subparsers._group_actions[0].choices["simulate"]._actions
                 if a.dest == "noise")
    assert sorted(sim.choices) == NAMES
    assert sorted(noise.choices) == sorted(NOISES)


@pytest.mark.parametrize("name", NAMES)
def test_every_optimizer_through_config_and_both_engines(name, tmp_path):
    p = tmp_path / "e.toml"
    extra = "momentum = 0.5\n" if "momentum" in OPTIMIZERS[name].__dataclass_fields__ else ""
    p.write_text(f'[optimizer]\nkind = "{name}"\nlearning_rate = 0.01\n{extra}')
    opt = config.load(str(p)).optimizer
    assert type(opt) is OPTIMIZERS[name]
    r = simulate(MODEL, opt, 8, 20, 16, progress=False)
    assert np.isfinite(r.mean).all()
    if opt.is_linear:
        assert np.isfinite(expected_loss(MODEL, opt, 8, 20).mean).all()
    else:
        with pytest.raises(ParameterError):
            expected_loss(MODEL, opt, 8, 20)


@pytest.mark.parametrize("name", sorted(NOISES))
def test_every_noise_law_runs(name):
    cls = NOISES[name]
    law = {"gaussian": lambda: cls(), "student_t": lambda: cls(5.0),
           "finite_data": lambda: cls(64, 0)}[name]()
    r = simulate(MODEL, _build("sgd"), 8, 20, 16, noise=law, progress=False)
    assert np.isfinite(r.mean).all() and r.spec["noise"]["name"] == name
