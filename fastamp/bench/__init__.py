"""The experiments behind fastamp's claims, run resumably and in parallel into records, one comparison at a time.

Written by hand, as `fastamp/all.py` is: it re-exports the public names of the modules of this package (each generated
from its notebook in `nbs/05_bench/`), so that `from fastamp.bench import X` works for every public X. The modules, in
their import order (each imports only those before it):

- `timing`: the phase clock of a run, the breakdown a page prints, a sweep's progress
- `catalog`: methods, datasets, the task record and presets: the one place to add a method, a dataset or a preset
- `store`: atomic writes and run locks that hold across hosts and restarts
- `training`: the learner recipe, optimizers, schedules, loaders, `CompileModel`, fit, step timing
- `resume`: checkpoints and random states
- `loggers`: fastai's loggers and the mixing values
- `tasks`: coarse-to-fine, long-tailed, overhead, and the task table `TASKS`
- `config`: `BenchConfig`, `check_settings` (reading the tables above), run keys, the `--list` text
- `records`: run records, `runs.csv`, the plan of a sweep (what `fastamp.report` reads)
- `sweep`: the shards of one sweep on a folder agree; the files of abandoned runs, listed and removed
- `runner`: one run, a comparison, a set of settings or one shard of it, worker processes over devices and cores
- `plan`: pre-registration plans: written, read back and enforced, registered in a folder, the page's line on them
"""
import warnings
with warnings.catch_warnings():  # fastai's layers call `torch.jit.script` as they load: a FutureWarning on every
    warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated', category=FutureWarning)  # command
    from .timing import *
    from .catalog import *
    from .store import *
    from .training import *
    from .resume import *
    from .loggers import *
    from .tasks import *
    from .config import *
    from .records import *
    from .sweep import *
    from .runner import *
    from .plan import *

run_bench = run_comparison  # its name before the package split, kept for code written then
