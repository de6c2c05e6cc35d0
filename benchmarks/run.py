"""Run fastnn's benchmark suite (the code lives in fastnn.bench, so an installed
wheel has it too; this is the same as `fastnn bench`).

    python benchmarks/run.py [--quick] [--out DIR] [--update-readme [README]]

--update-readme replaces the README's bench block (between <!-- bench:start -->
and <!-- bench:end -->) with this run's summary. benchmarks/README.md describes
the method and the schema of results.json.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

try:
    import fastnn.bench as bench
except ImportError:  # a source checkout that is not installed
    sys.path.insert(0, os.path.join(REPO, "python"))
    import fastnn.bench as bench


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    # A bare --update-readme means this repository's README, wherever we run from.
    for i, arg in enumerate(argv):
        if arg == "--update-readme" and (i + 1 == len(argv) or argv[i + 1].startswith("--")):
            argv.insert(i + 1, os.path.join(REPO, "README.md"))
            break
    return bench.cli(argv)


if __name__ == "__main__":
    sys.exit(main())
