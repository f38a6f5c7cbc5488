"""Where the default own-data command's time goes (issue 40): `fastamp bench --data FOLDER` on a nested folder built
offline, and the breakdown of its runs' phases read back from their records.

The folder is scikit-learn's digits made into a nested tree as a user's own data would be: 28 px grayscale PNGs,
`<digit>/<digit>_<place>/*.png`, each digit (the coarse class) drawn 2x at one of `--fine` places on the 28 px canvas
(the fine classes: 10 x `--fine`), `--n` images in all, no `test/` (a stratified split is drawn, as for most users'
folders). It is built once into `--folder` and reused.

Run: python benchmarks/profile_own_data.py [--n 5000] [--fine 25] [--out OUT] [-- more fastamp bench options]
(the issue's size is `--n 5000 --fine 25`: minutes on 2 cores; `--n 600 --fine 4` checks the script in seconds).
Prints the command, the wall time, and per task the seconds and share of each phase summed over its runs, and the
share of everything that is not training per second of training (the issue's target: at most 0.25); writes the wall
time, the options and the machine to `<out>/command.json` for `benchmarks/own_data_page.py`.
"""
import argparse, os, platform, sys, tempfile, time
from pathlib import Path
import numpy as np


def nested_digits(
    path, # folder to write (reused when it holds a finished build of the same size)
    n:int=5000, # images in all
    fine:int=25, # places per digit: fine classes per coarse class
    side:int=28, # image side in pixels
    seed:int=0, # which digits and places
)->Path:
    "scikit-learn's digits as a nested `<coarse>/<fine>/` folder of `n` grayscale PNGs of `side` px"
    from PIL import Image
    from fastamp.datasets import load_digits
    path, done = Path(path), f"{n} {fine} {side} {seed}"
    if (path/'.built').exists() and (path/'.built').read_text() == done: return path
    d, rng = load_digits(), np.random.default_rng(seed)
    grid = int(np.ceil(np.sqrt(fine))); step = (side - 16) // max(1, grid - 1)
    for i in range(n):
        j, place = rng.integers(len(d.labels)), i % fine
        x = np.zeros((side, side), np.uint8); r, c = step * (place // grid), step * (place % grid)
        x[r:r + 16, c:c + 16] = np.kron(d.items[j], np.ones((2, 2), np.uint8))
        digit = d.vocab[d.labels[j]]
        p = path/digit/f"{digit}_{place:02d}"/f"{i:05d}.png"; p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x).save(p)
    (path/'.built').write_text(done)
    return path


def breakdown(out)->str:
    "The phases of the runs in `out`, per task: seconds, share, and the non-training share"
    from fastamp.bench import out_records, phase_lines, non_training_share
    recs, lines = out_records(out), []
    for task in dict.fromkeys(r.task for r in recs):
        mine = [r for r in recs if r.task == task and r.phases]
        if not mine: continue
        lines += [f"### {task}: {len(mine)} runs, {sum(r.wall_s for r in mine):.1f} s of runs", '',
                  "\n\n".join(phase_lines(task, mine)), '',
                  f"beside training: {non_training_share(mine):.3f} s per second of training", '']
    return '\n'.join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--n', type=int, default=5000, help='images in the folder')
    p.add_argument('--fine', type=int, default=25, help='fine classes per digit')
    p.add_argument('--folder', default=None, help='where the folder is built (default: a temporary folder)')
    p.add_argument('--out', default=None, help="fastamp bench's --out (default: a temporary folder)")
    p.add_argument('more', nargs='*', help='more fastamp bench options, after --')
    a = p.parse_args(argv)
    from fastamp.cli import main as fastamp
    with tempfile.TemporaryDirectory() as tmp:
        folder = nested_digits(a.folder or Path(tmp)/'folder', a.n, a.fine)
        out = str(Path(a.out).resolve()) if a.out else str(Path(tmp)/'out')
        os.chdir(folder.parent)  # the records name the folder relatively (by its name), as a page's records must
        cmd = ['bench', '--data', folder.name, '--out', out, *a.more]
        print(f"fastamp {' '.join(cmd)}  ({a.n} images, {10 * a.fine} fine classes; {platform.machine()}, "
              f"{len(os.sched_getaffinity(0))} cores)", flush=True)
        load, t = os.getloadavg()[0], time.perf_counter(); code = fastamp(cmd)
        wall = time.perf_counter() - t
        print(f"\nwall time of the command: {wall:.0f} s (exit {code})\n\n{breakdown(out)}")
        write_command(out, a, wall, code, load)
    return code


def write_command(out, a, wall:float, code:int, load:float):
    """`out/command.json`: the folder's size, the options, the machine, its 1-minute load average at the start and the
    command's wall time (no paths)"""
    import json
    Path(out, 'command.json').write_text(json.dumps(dict(
        n=a.n, fine=a.fine, options=a.more, wall_s=round(wall, 1), exit=code, machine=platform.machine(),
        cores=len(os.sched_getaffinity(0)), load_at_start=load), indent=1))


if __name__ == '__main__': sys.exit(main())
