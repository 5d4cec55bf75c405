"""The command line: `python -m experiments list` and `python -m experiments run NAME ...`."""

import argparse
import sys

import experiments


def _parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(
        prog="python -m experiments", description="Reproducible experiments with jaxnets.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the experiments with a one-line description")
    run = commands.add_parser("run", help="run one experiment into a new folder",
                              description="Run one experiment; see `list` for the names.")
    run.add_argument("name", help="a registered experiment (see `list`)")
    run.add_argument("--seed", type=int, help="replaces the config's seed")
    run.add_argument("--out", help="run folder, new or empty; default runs/NAME/<UTC time>-seed<N>")
    run.add_argument("--smoke", action="store_true", help="a seconds-long run (the module's SMOKE)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config field (repeatable); tuples comma-separated, "
                          "e.g. --set hidden=64,32")
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
