"""The repository's promises: README commands, CI, notebooks, generated code."""
from pathlib import Path
import ast, gzip, json, re

ROOT = Path(__file__).parents[1]


def readme_commands():
    lines = (ROOT / 'README.md').read_text().splitlines()
    block = lines[lines.index('```bash') + 1:]
    return block[:block.index('```')]


def test_readme_opens_with_the_two_commands():
    main, tests = readme_commands()
    assert (ROOT / 'README.md').read_text().splitlines()[2] == '```bash'
    assert main.startswith('python3 -m venv .venv') and 'constraints.txt' in main and 'fastamp' in main
    assert 'nbdev_test' in tests and 'pytest' in tests


def test_ci_runs_the_readme_test_command_verbatim():
    assert readme_commands()[1] in (ROOT / '.ci' / 'run').read_text().splitlines()


def test_every_notebook_is_tested():
    "nbdev_test skips notebooks whose name starts with '_' or that carry skip_exec: none may be skipped silently"
    nbs = sorted((ROOT / 'nbs').rglob('*.ipynb'))
    assert nbs
    for nb in nbs:
        if '.ipynb_checkpoints' in nb.parts: continue
        assert not nb.name.startswith('_'), f'{nb} would be skipped by nbdev_test'
        meta = json.loads(nb.read_text())
        src = ''.join(''.join(c['source']) for c in meta['cells'][:3])
        assert 'skip_exec' not in src and 'skip_showdoc' not in meta.get('metadata', {}), f'{nb} skips execution'


def test_flagged_cells_are_the_ones_nbdev_test_skips():
    "nbdev_test splits `tst_flags` on spaces (`slow|gpu` would be one flag, and every `#| slow` cell would run in CI)"
    import configparser
    from conftest import load_script
    cfg = configparser.ConfigParser(); cfg.read(ROOT / 'settings.ini')
    skip = load_script(ROOT / 'tools' / 'execute_docs.py').SKIP_FLAGS
    assert set(cfg['DEFAULT']['tst_flags'].split()) == skip == {'slow', 'gpu'}


def test_settings_declare_upper_bounds():
    import configparser
    cfg = configparser.ConfigParser(); cfg.read(ROOT / 'settings.ini')
    for req in (cfg['DEFAULT']['requirements'] + ' ' + cfg['DEFAULT']['dev_requirements']).split():
        assert '<' in req, f'{req} has no upper bound'


BESIDE = r"\.\./" + "shared|" + "shared" + r"/data|['\"]" + "shared" + r"['\"]"  # spelt so this file does not match


def test_nothing_reads_the_folder_beside_the_repository():
    "A user's clone has no shared-data folder beside it: data locations come from arguments and environment variables"
    bad = [str(p.relative_to(ROOT)) for d in ('nbs', 'tests', 'fastamp', 'benchmarks') for p in (ROOT / d).rglob('*')
           if p.suffix in ('.py', '.ipynb') and p.name != 'test_repo.py'
           and re.search(BESIDE, p.read_text())]
    bad += ['README.md'] if re.search(BESIDE, (ROOT / 'README.md').read_text()) else []
    assert not bad, f'these files name the folder beside the repository: {bad}'


def test_the_sdist_carries_what_setup_py_reads():
    manifest = (ROOT / 'MANIFEST.in').read_text().split()
    for f in ('settings.ini', 'LICENSE', 'README.md'): assert f in manifest
    assert 'Apache License' in (ROOT / 'LICENSE').read_text()


def test_no_test_file_imports_another():
    "Helpers shared by test files live in tests/conftest.py"
    bad = [(p.name, m) for p in (ROOT/'tests').glob('*.py')
           for m in re.findall(r'^\s*(?:from|import)\s+(test_\w+)', p.read_text(), re.M)]
    assert not bad, bad


def test_rooms_stay_small():
    "Modules within 400 lines, classes 120, functions 50, lines 120 characters (nbdev's `__all__` aside)"
    limits = {ast.ClassDef: 120, ast.FunctionDef: 50, ast.AsyncFunctionDef: 50}
    big, classes, attached = [], {}, {}
    for p in sorted((ROOT/'fastamp').rglob('*.py')):
        if p.name == '_modidx.py': continue
        text, name = p.read_text(), str(p.relative_to(ROOT))
        lines, tree = text.splitlines(), ast.parse(text)
        if len(lines) > 400: big.append(f"{name}: {len(lines)} lines")
        spans = [(n.lineno, n.end_lineno) for n in tree.body if isinstance(n, ast.Assign)
                 and any(getattr(t, 'id', None) == '__all__' for t in n.targets)]
        for n in ast.walk(tree):
            size = n.end_lineno - n.lineno + 1 if type(n) in limits else 0
            if isinstance(n, ast.ClassDef): classes[n.name] = classes.get(n.name, 0) + size
            elif size > limits.get(type(n), size): big.append(f"{name}: {n.name} is {size} lines")
            if (patched := _patched_class(n)): attached[patched] = attached.get(patched, 0) + size
        big += [f"{name}:{i}: over 120 characters" for i, l in enumerate(lines, 1)
                if len(l) > 120 and not any(a <= i <= b for a, b in spans)]
    big += [f"{c}: {n + attached.get(c, 0)} lines with its @patch methods" for c, n in classes.items()
            if n + attached.get(c, 0) > 120]
    assert not big, big


def _patched_class(node)->str|None:
    "The class a fastcore `@patch` function is attached to (its first argument's annotation), else None"
    if not isinstance(node, ast.FunctionDef) or not node.args.args: return None
    if not any(getattr(d, 'id', None) == 'patch' for d in node.decorator_list): return None
    return getattr(node.args.args[0].annotation, 'id', None)


# an absolute folder of the machine that ran something: temp, work, home and mount folders, a Windows drive; not a
# URL's path (`https://host/data/x`) nor a relative one (`nbs/data/`, `../work/`): those follow a word, `.` or `/`
MACHINE_PATH = re.compile(r"(?<![\w.~/\\-])(?:/(?:tmp|work|root|home|Users|private/var|var/folders|scratch|mnt|data)/"
                          r"|[A-Za-z]:\\)[^\s'\"`)\],;]*")
RESULT_TEXTS = ('.md', '.csv', '.json', '.jsonl', '.txt')


def test_the_machine_path_pattern():
    found = lambda t: MACHINE_PATH.findall(t)
    assert found("from /work/shared/x.tar.gz (checksum") == ['/work/shared/x.tar.gz']
    assert found("--out /tmp/a/b, at=/home/u/c, ('/Users/me/d') C:\\Users\\me e") == [
        '/tmp/a/b', '/home/u/c', '/Users/me/d', 'C:\\Users\\me']
    assert found("/private/var/folders/x /mnt/d /scratch/e /data/f /root/g") == [
        '/private/var/folders/x', '/mnt/d', '/scratch/e', '/data/f', '/root/g']
    assert not found("https://docs.fast.ai/data/x http://host:8/tmp/y nbs/data/z ../work/w ./tmp/v $FASTAMP_CIFAR10 "
                     "bench_out/tmp/u fastai.data.core /tmpfile")


def result_texts():
    "`(path, text)` of each text file under results/ (`.gz` decompressed)"
    for p in sorted((ROOT/'results').rglob('*')):
        if p.suffix == '.gz': yield p, gzip.decompress(p.read_bytes()).decode(errors='replace')
        elif p.suffix in RESULT_TEXTS: yield p, p.read_text(errors='replace')


def output_texts(nb: Path):
    "`(cell index, text)` of each output of `nb`'s cells, images left out: what a reader of the page sees"
    for i, c in enumerate(json.loads(nb.read_text())['cells']):
        for o in c.get('outputs', []):
            data = [v for k, v in o.get('data', {}).items() if not k.startswith('image/')]
            parts = [o.get('text', ''), o.get('traceback', []), o.get('evalue', ''), *data]
            yield i, ''.join(''.join(p) if isinstance(p, list) else str(p) for p in parts)


def test_no_machine_path_in_results_or_notebook_outputs():
    "Pages travel: results/ and the committed outputs name data by dataset, checksum and variable, folders relatively"
    bad = [f"{p.relative_to(ROOT)}: {m}" for p, t in result_texts() for m in MACHINE_PATH.findall(t)]
    nbs = [nb for nb in sorted((ROOT/'nbs').rglob('*.ipynb')) if not {'.ipynb_checkpoints', '_proc'} & set(nb.parts)]
    bad += [f"{nb.relative_to(ROOT)} cell {i}: {m}" for nb in nbs for i, t in output_texts(nb)
            for m in MACHINE_PATH.findall(t)]
    assert not bad, 'absolute paths of the machine that made them:\n' + '\n'.join(bad)


NAMING_HOMES = {'bench/catalog.py', 'datasets.py'}  # the catalog's entries and aliases; the readers' own names


def dataset_name_uses(path:Path)->list:
    "`(line, name)` where `path` compares a value with a dataset's name, or spells one of the benchmark's own names"
    from fastamp.bench import DATASETS
    names = {a for d in DATASETS.values() for a in (d.name, *d.aliases)}
    own = {d.name for d in DATASETS.values() if d.folder or d.aliases}  # the benchmark's alone: fmnist, folder
    def named(n): return [e for e in (n.elts if isinstance(n, (ast.Tuple, ast.List, ast.Set)) else [n])
                          if isinstance(e, ast.Constant) and e.value in names]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            found += [(node.lineno, e.value) for n in (node.left, *node.comparators) for e in named(n)]
        elif isinstance(node, ast.Constant) and node.value in own: found.append((node.lineno, node.value))
    return sorted(set(found))


def test_datasets_are_asked_not_named():
    "What a dataset is (a folder, its aliases, its coarse map) is its catalog entry's: no name compared elsewhere"
    pkg = ROOT/'fastamp'
    bad = [f"{p.relative_to(pkg)}:{line}: {name!r}" for p in sorted(pkg.rglob('*.py'))
           if p.name != '_modidx.py' and p.relative_to(pkg).as_posix() not in NAMING_HOMES
           for line, name in dataset_name_uses(p)]
    assert not bad, "ask the catalog (`get_dataset(name).folder`, `is_folder`, `dataset_name`):\n" + '\n'.join(bad)


def test_the_name_check_sees_comparisons_and_spellings(tmp_path):
    p = tmp_path/'m.py'
    p.write_text("a = x == 'folder'\nb = d in ('cifar10', 'fashion-mnist')\nc = {'fmnist': 1}\nd = 'cifar100'\n")
    assert dataset_name_uses(p) == [(1, 'folder'), (2, 'cifar10'), (2, 'fashion-mnist'), (3, 'fmnist')]
