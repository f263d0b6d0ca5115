"""pyflame-convert: converts an ONNX model into a PyFlameRT .pfm model.

    pyflame-convert model.onnx model.pfm

Imports IN with the ONNX importer, prints the import statistics and saves OUT with
save_model. Exit status 0 on success, 1 with a one-line error on failure.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

PROG = "pyflame-convert"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Convert an ONNX model (.onnx) into a PyFlameRT model (.pfm).",
    )
    p.add_argument("input", metavar="IN", help="the ONNX model to import (.onnx)")
    p.add_argument("output", metavar="OUT", help="the PyFlameRT model to write (.pfm)")
    p.add_argument("--no-validate", action="store_true", help="skip graph validation after import")
    p.add_argument("--no-infer-shapes", action="store_true", help="skip shape inference")
    p.add_argument("--optimize", action="store_true", help="apply basic optimizations")
    p.add_argument("--strict", action="store_true", help="fail on import warnings")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    return p


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)

    def fail(message: str) -> int:
        print(f"{PROG}: error: {_one_line(message)}", file=sys.stderr)
        return 1

    try:
        import pyflame_rt
        from pyflame_rt.import_module import ONNXImporter
    except ImportError as e:  # pragma: no cover - broken installation
        return fail(f"cannot import pyflame_rt: {e}")

    if not os.path.isfile(args.input):
        return fail(f"no such file: {args.input}")

    options = pyflame_rt.ImportOptions()
    options.validate = not args.no_validate
    options.infer_shapes = not args.no_infer_shapes
    options.optimize = args.optimize
    options.strict = args.strict

    try:
        result = ONNXImporter().import_model(args.input, options)
        if not result.success or result.graph is None:
            return fail(f"cannot import {args.input}: {result.error or 'unknown error'}")
        stats = result.stats
        if not args.quiet:
            print(f"Imported {args.input}")
            print(f"  nodes:        {stats.node_count}")
            print(f"  initializers: {stats.initializer_count}")
            print(f"  parameters:   {stats.parameter_count:,}")
            print(f"  time:         {stats.import_time_ms:.2f} ms")
            print(f"  warnings:     {len(stats.warnings)}")
            for w in stats.warnings:
                print(f"    - {_one_line(w)}")
        pyflame_rt.save_model(result.graph, args.output)
    except (pyflame_rt.PyFlameRTError, OSError, ValueError, TypeError) as e:
        return fail(str(e) or type(e).__name__)

    if not args.quiet:
        print(f"Saved {args.output}")
    return 0


if __name__ == "__main__":  # python -m pyflame_rt.tools.convert
    sys.exit(main())
