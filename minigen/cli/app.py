"""The ``minigen`` command (also ``python -m minigen``).

    minigen demo [--quick] [--out DIR]     fit every family on built-in data: a comparison
                                           table and a gallery (figures + report.html)
    minigen fit MODEL --data D [--steps N | --epochs N] [--key value ...] -o model.npz
    minigen sample model.npz -n N -o out.npy|out.png|out.txt
    minigen score model.npz --data D       mean log-likelihood (or stated bound) of the
                                           held-out split that fit kept out
    minigen compare --data D [--models a b ...] [--steps N] [--out DIR]
    minigen bench [--quick]                kernel and engine speed ratios, measured now
    minigen info                           versions, active kernels and why, GPU

D is a built-in data set (moons, 8gaussians, digits, digits-binary, pydoc, names, ...) or a
.npy / .csv / .txt file; fit trains on a built-in set's training split and score uses its
held-out split. MODEL is a registered name (``minigen fit --help`` lists them;
``minigen fit MODEL --help`` lists the model's options).
"""
import argparse
import os
import sys

from . import commands, options


def _parser(model=None):
    from ..data import sources
    from ..distribution import models
    import minigen
    names = ", ".join(sorted(models()))
    parser = argparse.ArgumentParser(prog="minigen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"minigen {minigen.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, func, help, epilog=None):
        p = sub.add_parser(name, help=help, description=help, epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--quiet", action="store_true", help="no progress output")
        p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        p.set_defaults(func=func)
        return p

    from . import demo
    p = command("demo", demo.demo, "fit every family on built-in data; table and gallery")
    p.add_argument("--quick", action="store_true", help="smaller training budgets")
    p.add_argument("--out", default="minigen-out", help="gallery folder (default minigen-out)")

    registered = models().get(model)
    p = command("fit", commands.fit, f"fit a model and save it; MODEL is one of: {names}",
                epilog=None if registered is None else options.describe(registered, model))
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--data", required=True, help=f"{', '.join(sources.names())} or a file")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int)
    budget.add_argument("--epochs", type=int)
    p.add_argument("-o", "--output", required=True, help="the fitted model's path (.npz)")
    p.add_argument("--checkpoint", help="write a training checkpoint here every 100 steps and "
                   "on Ctrl-C (default: beside the output, -o model.npz -> model.ckpt.npz, removed "
                   "when the fit completes)")
    p.add_argument("--resume", help="continue from this training checkpoint, on any number of "
                   "ranks")

    p = command("sample", commands.sample, "draw samples from a saved model")
    p.add_argument("model_file")
    p.add_argument("-n", type=int, default=100)
    p.add_argument("-o", "--output", required=True, help=".npy, .png or .txt")

    p = command("score", commands.score, "mean log-likelihood (or bound) of data")
    p.add_argument("model_file")
    p.add_argument("--data", required=True)

    p = command("compare", commands.compare, "every applicable method on one data set")
    p.add_argument("--data", required=True)
    p.add_argument("--models", nargs="+", help=f"subset of: {names}")
    p.add_argument("--steps", type=int, help="training budget of the deep models")
    p.add_argument("--out", default="minigen-out", help="folder for compare.md and the figure")

    from . import bench
    p = command("bench", bench.bench, "kernel and engine speed ratios, measured now")
    p.add_argument("--quick", action="store_true")

    p = command("info", commands.info, "versions, active kernels, GPU")
    p.add_argument("--json", action="store_true", help="also print the kernel table as JSON")
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        from .. import kernels
        try:
            kernels.requested_path()          # an invalid MINIGEN_KERNELS: one line, exit 2
        except ValueError as err:
            raise commands.UsageError(str(err)) from None
        parser = _parser(options.model_word(argv) if argv[:1] == ["fit"] else None)
        args, extra = parser.parse_known_args(argv)
        if extra and args.command != "fit":
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        model_options = options.parse(extra, args.model) if args.command == "fit" else {}
        args.argv = argv                  # for the command that resumes an interrupted fit
        return args.func(args, model_options)
    except commands.UsageError as err:
        print(f"minigen: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:   # e.g. `minigen demo | head`: stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("minigen: interrupted", file=sys.stderr)
        return 130
