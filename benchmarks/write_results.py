"""Turn a finished `fastamp bench` output folder into a results/*.md page: command, machine, versions, seeds, wall time,
and the tables, exactly as the runs recorded them (the same page `fastamp bench` writes, from `fastamp.report`).

Usage: python benchmarks/write_results.py OUT_DIR TITLE "COMMAND" [LOG] > results/NAME.md
LOG, when given, is the output of `time fastamp bench ...`: its `real` line gives the elapsed time of the command.
"""
import sys
from pathlib import Path
from fastamp.report import results_page


def elapsed(log):
    "The `real` time of a `time` command's output, or None"
    if not log or not Path(log).exists(): return None
    real = [l for l in Path(log).read_text().splitlines() if l.startswith('real')]
    return real[-1].split()[1] if real else None


def main(out, title, command, log=None):
    print(results_page(out, title=title, command=command, elapsed=elapsed(log), plots=False), end='')


if __name__ == '__main__': main(*sys.argv[1:])
