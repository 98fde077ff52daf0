"""The ``unilstm`` command line.

    unilstm convert SRC DST [--from FMT] [--to FMT] [--layer NAME] [--prefix encoder.] [--source-prefix P]
                            [--weights-only] [--tolerance 1e-5] [-q] [--json] [--emit-code PATH]
                            [--require-crc] [--crc] [--lstm-only] [--batch-first]
    unilstm inspect FILE [--from FMT] [--json] [--require-crc]
    unilstm bench ...        (runs unilstm.bench when installed)
    unilstm --version        (also ``python -m unilstm --version``)

With no command (``unilstm``, ``python -m unilstm``) it prints this usage and its commands and exits with
status 2, as for any other bad arguments.

Exit status: 0 done; 1 the target's numbers differ from the source's beyond the tolerance (nothing written);
2 the conversion cannot be done (unreadable file, semantics the target cannot express, bad arguments, a
destination that is the source, read-only or not a regular file, any failure to read or write), with one
error message and no traceback; 143 ended by SIGTERM (its temporary file removed).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType

from . import convert as _convert
from ._version import __version__
from .convert.verification import DIFFERENCE

EXIT_OK, EXIT_MISMATCH, EXIT_ERROR = 0, 1, 2


def _tolerance(text: str) -> float:
    """--tolerance: a number >= 0 (NaN or a negative one would fail every conversion)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unilstm",
        description="Move trained LSTMs between Keras, MindSpore, torch, safetensors and ONNX, with proof.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    convert = commands.add_parser(
        "convert",
        help="convert SRC to DST and verify the numbers",
        description="Convert the LSTM layers of SRC to DST, then run both on random inputs and compare. DST "
        "is written only when the largest difference is within --tolerance. Formats: "
        + ", ".join(_convert.FORMATS),
    )
    convert.add_argument("source", metavar="SRC")
    convert.add_argument("target", metavar="DST")
    convert.add_argument("--from", dest="source_format", choices=_convert.READABLE, help="SRC's format")
    convert.add_argument("--to", dest="target_format", choices=_convert.WRITABLE, help="DST's format")
    convert.add_argument("--layer", help="convert only this layer (Keras name or key, or parameter prefix)")
    convert.add_argument(
        "--prefix",
        help="prefix for the written parameter names, e.g. encoder. (default: a state-dict source's own)",
    )
    convert.add_argument(
        "--lstm-only",
        action="store_true",
        help="convert only the LSTMs of a Keras model that has other layers too (default: the whole model)",
    )
    convert.add_argument(
        "--batch-first",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the source's stacks took (B, T, F) inputs (for .ckpt / plain .pt sources, which do not say)",
    )
    convert.add_argument("--source-prefix", help="read only parameters under this prefix from SRC")
    convert.add_argument(
        "--weights-only",
        action="store_true",
        help="write the weights even where DST's framework cannot express the source's semantics",
    )
    convert.add_argument(
        "--tolerance",
        type=_tolerance,
        default=1e-5,
        help="largest accepted difference, >= 0 (1e-5): max |target - source| / max(1, max |source|)",
    )
    convert.add_argument("--opset", type=int, help="ONNX opset (default 17)")
    convert.add_argument(
        "--require-crc", action="store_true", help="a .ckpt SRC must end with a matching CRC32 trailer"
    )
    convert.add_argument("--crc", action="store_true", help="end a .ckpt DST with MindSpore's CRC32 trailer")
    convert.add_argument(
        "--emit-code", metavar="PATH", help="also write a torch / MindSpore module rebuilding it"
    )
    convert.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    convert.add_argument("--json", action="store_true", help="print a machine-readable report")
    inspect = commands.add_parser("inspect", help="describe the LSTM layers of a file")
    inspect.add_argument("file", metavar="FILE")
    inspect.add_argument("--from", dest="format", choices=_convert.FORMATS, help="FILE's format")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.add_argument(
        "--require-crc", action="store_true", help="a .ckpt FILE must end with a matching CRC32 trailer"
    )
    bench = commands.add_parser("bench", help="speed and memory benchmarks (unilstm.bench)", add_help=False)
    bench.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def _error(message: str, as_json: bool, code: int = EXIT_ERROR, report: dict | None = None) -> int:
    if as_json:
        print(
            json.dumps(
                {"ok": False, "error": message, **({"differences": report} if report else {})}, indent=2
            )
        )
    else:
        print(f"unilstm: error: {message}", file=sys.stderr)
    return code


def _run_convert(args: argparse.Namespace) -> int:
    def progress(message: str) -> None:
        if not args.quiet and not args.json:
            print(f"... {message}", file=sys.stderr)

    try:
        report = _convert.convert(
            args.source,
            args.target,
            source_format=args.source_format,
            target_format=args.target_format,
            layer=args.layer,
            prefix=args.prefix,
            source_prefix=args.source_prefix,
            batch_first=args.batch_first,
            lstm_only=args.lstm_only,
            weights_only=args.weights_only,
            tolerance=args.tolerance,
            emit_code=args.emit_code,
            opset=args.opset,
            progress=progress,
            require_crc=args.require_crc,
            crc=args.crc,
        )
    except _convert.VerificationError as error:
        if not args.json:
            _print_differences(error.report)
        return _error(str(error), args.json, EXIT_MISMATCH, error.report)
    except (ValueError, OSError, ImportError) as error:  # every reader's error type is a ValueError
        return _error(str(error), args.json)
    except Exception as error:  # status 1 means "numbers differ": anything else is 2, without a traceback
        return _error(f"{args.target}: {type(error).__name__}: {error}", args.json)
    if args.json:
        print(json.dumps({"ok": True, **report.as_dict()}, indent=2, default=str))
        return EXIT_OK
    if not args.quiet:
        print(f"{report.source} ({report.source_format}) -> {report.target} ({report.target_format})")
        for layer in report.layers:
            print(f"  layer {layer}")
        for note in report.notes:
            print(f"  note: {note}")
        if report.verified:
            _print_differences(report.differences)
            print(
                f"verified: max difference {report.max_difference:.3g} <= tolerance {report.tolerance:g} "
                f"({DIFFERENCE})"
            )
        else:
            print("not verified (--weights-only with semantics the target cannot express)")
        if report.emitted:
            print(f"wrote {report.emitted}")
    return EXIT_OK


def _print_differences(report: dict) -> None:
    for layer, cases in report.items():
        for case, outputs in cases.items():
            text = ", ".join(f"{name} {value:.3g}" for name, value in outputs.items())
            print(f"  {layer} [{case}]: max |difference| {text}")


def _run_inspect(args: argparse.Namespace) -> int:
    try:
        info = _convert.inspect_file(args.file, args.format, require_crc=args.require_crc)
    except (ValueError, OSError, ImportError) as error:
        return _error(str(error), args.json)
    except Exception as error:  # exit status 2 with one line, as every failure to read
        return _error(f"{args.file}: {type(error).__name__}: {error}", args.json)
    print(json.dumps(info, indent=2, default=str) if args.json else _convert.format_inspection(info))
    return EXIT_OK


def _run_bench(args: argparse.Namespace) -> int:
    try:
        bench = importlib.import_module("unilstm.bench")
    except ImportError:
        return _error("the bench command needs unilstm.bench, which this installation does not have", False)
    result = bench.main(list(args.args))
    return int(result or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (``sys.argv[1:]`` when None); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":  # pass everything, --help included, to the bench module
        return _run_bench(argparse.Namespace(args=argv[1:]))
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "convert":
        with _sigterm_as_exit():
            return _run_convert(args)
    if args.command == "inspect":
        return _run_inspect(args)
    parser.print_help()  # no command: the help on stdout, and the status of bad arguments
    return EXIT_ERROR


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """SIGTERM ends a conversion as SystemExit(143), so that its temporary file is removed on the way out
    (the default handler ends the process on the spot)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    def leave(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, leave)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


if __name__ == "__main__":
    sys.exit(main())
