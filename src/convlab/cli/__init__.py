"""The `convlab` command line: parses arguments and calls the library, nothing more.

Each module here adds its subcommands; COMMAND_MODULES fixes their order in `convlab --help`.
"""
from __future__ import annotations

import os
import signal
import sys

from ..errors import ConvlabError
from . import compress, convert, explain, finetune, insight, listing, lr_find, serve, train, use
from .common import Parser

COMMAND_MODULES = [train, finetune, lr_find, use, serve, insight, compress, convert, explain, listing]


def build_parser() -> Parser:
    parser = Parser(prog="convlab", description="Train, evaluate and use CNN image classifiers.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in COMMAND_MODULES:
        module.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if _rank():
        signal.signal(signal.SIGINT, _note_interrupt)
    try:
        return args.func(args)
    except ConvlabError as err:
        print(f"convlab {args.command}: error: {_rank()}{err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # training saves its state first and says how to resume
        print(f"convlab {args.command}: {_rank()}interrupted" + (f"; {err}" if str(err) else ""), file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `convlab models | head`: the reader left, nothing is wrong
        sys.stdout = open(os.devnull, "w")
        return 0
    except Exception as err:
        if _INTERRUPTED:  # under torchrun, Ctrl-C reaches the ranks at different moments: a rank still in a
            # collective sees its peer leave as an error, which is the same Ctrl-C
            print(f"convlab {args.command}: {_rank()}interrupted", file=sys.stderr)
            return 130
        if _rank():  # under torchrun: say which process failed before the traceback and the agent's summary
            print(f"convlab {args.command}: {_rank()}failed with {type(err).__name__}: {err}", file=sys.stderr)
        raise


_INTERRUPTED: list[int] = []  # the SIGINTs a rank under torchrun received


def _note_interrupt(signum, frame):
    _INTERRUPTED.append(signum)
    raise KeyboardInterrupt


def _rank() -> str:
    """'rank R of N: ' in a process started by torchrun, else ''."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return f"rank {os.environ.get('RANK', '?')} of {world}: " if world > 1 else ""


if __name__ == "__main__":
    raise SystemExit(main())
