"""``nqm-mc noise-study``: one optimizer under several gradient-noise laws."""

from __future__ import annotations

from nqm_mc.cli._options import _add_output_args, _add_seed, _Formatter, _int_in


def cmd_noise_study(args):
    """Run the noise-law study and write its figure, table and data."""
    from nqm_mc import _files
    from nqm_mc.studies.adam_proxy import noise_study
    from nqm_mc.style import output_names
    out = _files.prepare_output(args.out, [f"noise_study.{e}" for e in ("md", "csv", "json")]
                                + output_names("noise_study", args.format),
                                "noise-study", args.force)
    noise_study(out.dir, n_runs=args.runs, seed=args.seed, quick=args.quick,
                formats=args.format)
    out.finish()
    print(f"wrote {out.path('noise_study')}.png, .md, .csv and .json")
    return 0


def add_parser(sub):
    """Declare ``nqm-mc noise-study`` and its options on the subparsers ``sub``."""
    p = sub.add_parser("noise-study", formatter_class=_Formatter,
                       help="Gaussian, Student-t and finite-data noise: means, quantiles, "
                            "hitting times",
                       description="One optimizer under gradient-noise laws with the same "
                                   "covariance: the mean loss against the exact engine and "
                                   "the loss quantiles and hitting times against the Gaussian "
                                   "case. Writes noise_study.png, .md, .csv and .json.\n\n"
                                   "example:\n  nqm-mc noise-study --quick --out noise-study")
    p.add_argument("--quick", action="store_true", help="1000 runs, 1500 steps")
    p.add_argument("--runs", type=_int_in(1, 2 ** 32 - 1), default=4000,
                   help="trajectories per law (4000)")
    _add_seed(p, 0)
    _add_output_args(p)
    return p
