"""The command line: `python -m experiments list` and `python -m experiments run NAME ...`;
`python -m experiments run NAME --help` lists NAME's config keys (for `--set`)."""

import argparse
import shutil
import sys

import experiments


class _RunHelp(argparse.Action):
    """`run --help`; after a name (`run NAME --help`), also that experiment's config keys:
    type, default, `--smoke` value, what each means (its comment) and allows."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        name = getattr(namespace, "name", None)
        module = None
        if name is not None:
            try:
                module = experiments.load(name)  # imports the experiment (and JAX)
            except experiments.UsageError as e:
                parser.exit(2, f"{parser.prog}: error: {e}\n")
        parser.print_help()
        if module is not None:
            from experiments._config import describe_config

            width = max(60, min(100, shutil.get_terminal_size().columns - 2))
            print(f"\n{name}: {experiments.describe(name)}\n\n"
                  f"config keys (--set KEY=VALUE; tuples comma-separated):\n"
                  f"{describe_config(module, width)}")
        parser.exit()


def _parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(
        prog="python -m experiments", description="Reproducible experiments with jaxnets.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the experiments with a one-line description")
    run = commands.add_parser("run", help="run one experiment into a new folder", add_help=False,
                              description="Run one experiment; see `list` for the names and "
                                          "`run NAME --help` for NAME's config keys.")
    run.add_argument("-h", "--help", action=_RunHelp,
                     help="show this help (after NAME: also NAME's config keys) and exit")
    run.add_argument("name", help="a registered experiment (see `list`)")
    run.add_argument("--seed", type=int, help="replaces the config's seed")
    run.add_argument("--out", help="run folder, new or empty; default runs/NAME/<UTC time>-seed<N>")
    run.add_argument("--smoke", action="store_true", help="a seconds-long run (the module's SMOKE)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config field (repeatable; the keys: `run NAME --help`); "
                          "tuples comma-separated, e.g. --set hidden=64,32")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser, run


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default `sys.argv[1:]`), run the command; 0 on success, 2 on a usage error."""
    parser, run_parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "list":
        width = max(map(len, experiments.EXPERIMENTS), default=0)
        for name in experiments.EXPERIMENTS:
            print(f"{name:<{width}}  {experiments.describe(name)}")
        return 0

    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            run_parser.error(f"--set expects KEY=VALUE, got {item!r}")
        if key.strip() in overrides:
            run_parser.error(f"--set {key.strip()} given twice ({overrides[key.strip()]!r} and "
                             f"{value!r}); give it once")
        if key.strip() == "seed" and args.seed is not None:
            run_parser.error(f"--set seed={value} and --seed {args.seed}: give the seed once")
        overrides[key.strip()] = value
    from experiments._framework import execute, format_summary  # imports jax: not for `list`
    try:
        metrics, outdir = execute(args.name, out=args.out, smoke=args.smoke, overrides=overrides,
                                  seed=args.seed, progress=not args.no_progress)
    except experiments.UsageError as e:
        print(f"{run_parser.prog}: error: {e}", file=sys.stderr)
        return 2
    print(format_summary(metrics, outdir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
