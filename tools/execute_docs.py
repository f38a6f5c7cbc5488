"""Re-execute fastamp's documentation notebooks and save them with their outputs, so that a reader sees the figures.

    python tools/execute_docs.py                     # every notebook of nbs/ (module pages, tutorials, index, method)
    python tools/execute_docs.py nbs/tutorials/*.ipynb
    python tools/execute_docs.py --flags slow ...    # also run the cells flagged `#| slow` (as `nbdev_test --flags`)

Cells are run as `nbdev_test` runs them (same working folder, `#| eval: false` and flagged cells skipped, their old
outputs cleared), figures are saved as plain PNG (not retina, to keep them small), and the notebook is then cleaned
with `nbdev_clean` so that CI's "notebooks are clean" check still passes. The first error stops the run and leaves the
notebook as it was. Two warnings that are fastai's and not the reader's concern are filtered (torch's deprecation of
`torch.jit.script`, which fastai uses, and `load_learner`'s blanket note on pickle), and progress bars are hidden
(the epoch tables stay). Run it as a fresh clone would, without `FASTAMP_CIFAR10`: the pages then show the data the
package builds offline where Fashion-MNIST or CIFAR are absent, and name no local path. The one exception is the folder
tutorial, whose point is real images: run it with `FASTAMP_CIFAR10` naming CIFAR-10's archive and `--flags slow` (it
prints no path either).
"""
from __future__ import annotations
import argparse, os, re, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
SKIP_FLAGS = {'slow', 'gpu'}  # settings.ini's tst_flags: cells CI does not run
# fastai's warnings that are noise to a reader (torch.jit.script deprecated at its import; pickle in `load_learner`),
# and fastprogress's console bars (this shell is no notebook) would leave every step's bar in the saved outputs
QUIET = ("import warnings; warnings.filterwarnings('ignore', message='.*torch.jit.script', category=FutureWarning)\n"
         "warnings.filterwarnings('ignore', message='load_learner. uses Python.s insecure pickle')\n"
         "import fastprogress.fastprogress; fastprogress.fastprogress.NO_BAR = True")


def settle(text: str) -> str:
    "Stream text as a terminal leaves it: what a carriage return overwrote is gone (fastprogress's probe prints)"
    return '\n'.join(line.rsplit('\r', 1)[-1] if '\r' in line else line for line in text.split('\n'))


def tidy(outputs: list) -> list:
    "The outputs with stream text settled, and streams left empty dropped"
    for o in outputs:
        if o.get('output_type') == 'stream': o['text'] = settle(''.join(o['text'])).splitlines(True)
    return [o for o in outputs if o.get('output_type') != 'stream' or ''.join(o['text']).strip()]


def doc_notebooks() -> list[Path]:
    "Every notebook nbdev renders: the module pages, the tutorials, the index and the method page"
    return sorted(p for p in NBS.rglob('*.ipynb') if not any(part.startswith(('.', '_')) for part in p.parts))


def directives(source: str) -> dict:
    "The `#| name value` lines at the top of a cell"
    found = {}
    for line in source.splitlines():
        m = re.match(r'\s*#\|\s*([\w:-]+)\s*(.*)', line)
        if m: found[m.group(1)] = m.group(2).strip()
    return found


def skipped(cell, flags: set) -> bool:
    "Whether `nbdev_test` would skip `cell` (markdown, `eval: false`, a flag that is not asked for, `nbdev_export(`)"
    if cell.cell_type != 'code': return True
    d = directives(cell.source)
    return d.get('eval:', '').lower() == 'false' or bool(flags & d.keys()) or 'nbdev_export' + '(' in cell.source


def execute(path: Path, flags: set) -> float:
    "Run `path` in a fresh shell and write it back with its outputs; returns the seconds it took"
    from execnb.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory
    nb, start = read_nb(path), time.time()
    shell = CaptureShell(path, mpl_format='png')
    shell.run_cell(QUIET)
    with working_directory(path.parent):
        for cell in nb.cells:
            if skipped(cell, flags):
                if cell.cell_type == 'code': cell.outputs = []
                continue
            shell.cell(cell)
            if shell.exc: raise RuntimeError(shell.prettytb(fname=path))
            cell.outputs = tidy(cell.outputs)
    write_nb(nb, path)
    return time.time() - start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('notebooks', nargs='*', type=Path, help='notebooks to run (default: every notebook of nbs/)')
    p.add_argument('--flags', default='', help='space-separated flags whose cells run too, e.g. "slow"')
    args = p.parse_args(argv)
    flags = SKIP_FLAGS - set(args.flags.split())
    os.environ.setdefault('MPLBACKEND', 'Agg')
    paths = [n.resolve() for n in args.notebooks] or doc_notebooks()
    for path in paths:
        print(f'{os.path.relpath(path, ROOT)}: {execute(path, flags):.0f} s', flush=True)
    subprocess.run([Path(sys.executable).parent/'nbdev_clean'], cwd=ROOT, check=True)


if __name__ == '__main__': main()
