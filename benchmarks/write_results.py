"""Turn a finished `fastamp bench` output folder into a results/*.md page: command, machine, versions, seeds, wall time,
and the tables, exactly as the runs recorded them (the same page `fastamp bench` writes, from `fastamp.report`).

Usage: python benchmarks/write_results.py OUT_DIR TITLE "COMMAND" [LOG] [--figures DIR] > results/NAME.md
LOG, when given, is the output of `time fastamp bench ...`: its `real` line gives the elapsed time of the command.
--figures DIR draws the page's plots (fine-probe curves) and copies those it links into DIR, linked from the page as
`<DIR's name>/<file>`: give DIR beside the page, e.g. results/c2f_study for results/c2f_study.md.
"""
import argparse, re, shutil
from pathlib import Path
from fastamp.report import results_page


def elapsed(log):
    "The `real` time of a `time` command's output, or None"
    if not log or not Path(log).exists(): return None
    real = [l for l in Path(log).read_text().splitlines() if l.startswith('real')]
    return real[-1].split()[1] if real else None


def relink(page, out, figures):
    "Copy the images `page` links (relative to `out`) into `figures`, and link them there"
    figures = Path(figures); figures.mkdir(parents=True, exist_ok=True)
    def move(m):
        src = Path(out) / m.group(2)
        shutil.copyfile(src, figures / src.name)
        return f"{m.group(1)}({figures.name}/{src.name})"
    return re.sub(r'(!\[[^\]]*\])\(([^)]+\.png)\)', move, page)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('out'); p.add_argument('title'); p.add_argument('command'); p.add_argument('log', nargs='?')
    p.add_argument('--figures', help='folder beside the page for its plots (default: no plots)')
    a = p.parse_args(argv)
    page = results_page(a.out, title=a.title, command=a.command, elapsed=elapsed(a.log), plots=bool(a.figures))
    if a.figures: page = relink(page, a.out, a.figures)
    print(page, end='')


if __name__ == '__main__': main()
