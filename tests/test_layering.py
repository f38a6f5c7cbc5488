"""The module map of the design page (nbs/design.ipynb), checked on the package's own imports: no module imports one above it, no cycle.

Modules of a subpackage are named with their package (`bench.catalog`); inside layer 4 the bench modules have an
order of their own (each imports only those before it)."""
import ast, re
from pathlib import Path

PKG = Path(__file__).parents[1]/'fastamp'
BENCH = ['timing', 'catalog', 'store', 'training', 'resume', 'loggers', 'tasks', 'config', 'records', 'sweep', 'runner',
         'plan']
LAYERS = {  # layer of each module; `all` re-exports everything and sits above the rest
    'core': 1, 'metrics': 1, 'accuracies': 1, 'models': 1, 'datasets': 1, 'hooks': 1, 'cache': 1,
    'losses': 2, 'mixing': 2, 'mixup': 2, 'data': 2, 'devicedata': 2,
    'transfer': 3, 'evaluate': 3,
    **{f'bench.{m}': 4 + i / 100 for i, m in enumerate(BENCH)}, 'bench': 4.5,  # `bench/__init__` re-exports them
    'report': 5, 'verdict': 5, 'curves': 5,
    'cli': 6,
    'all': 7,
}
SAME_LAYER = {  # the imports inside one layer, each clearly one-way (the design page): the policies on their mechanism, ...
    ('mixup', 'mixing'),
    ('devicedata', 'data'),  # ... the device-resident loaders on the per-item recipes, ...
    ('accuracies', 'metrics'),  # ... the accuracies on the measures' checks, ...
    ('datasets', 'cache'),  # ... the readers on where their cache lives, ...
    ('evaluate', 'transfer'),  # ... the probes on which training items they fit on and validate on
}


def _name(path:Path)->str:
    "`bench.catalog` for fastamp/bench/catalog.py, `bench` for its __init__, `core` for fastamp/core.py"
    parts = path.relative_to(PKG).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _exists(name:str)->bool:
    p = PKG.joinpath(*name.split('.'))
    return p.with_suffix('.py').exists() or (p/'__init__.py').exists()


def _path(name:str)->Path:
    p = PKG.joinpath(*name.split('.'))
    return p.with_suffix('.py') if p.with_suffix('.py').exists() else p/'__init__.py'


def _base(path:Path, name:str, node:ast.ImportFrom)->str|None:
    "The dotted fastamp module `from ... import` reads in `path` (module `name`); None when it is not fastamp's"
    here = name.split('.')[:-1] if path.name != '__init__.py' else name.split('.')
    mod = node.module or ''
    if node.level: return '.'.join([*here[:len(here) - node.level + 1], *(mod.split('.') if mod else [])])
    return mod[len('fastamp.'):] if mod == 'fastamp' or mod.startswith('fastamp.') else None


def _module_level(tree:ast.Module):
    "The statements that bind a module's names: its body and the blocks inside it, not functions or classes"
    todo = list(tree.body)
    while todo:
        n = todo.pop(); yield n
        if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            todo += [c for c in ast.iter_child_nodes(n) if isinstance(c, ast.stmt)]


def _all(tree:ast.Module)->list:
    "A module's `__all__` (what `import *` brings)"
    return next((ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                 and any(getattr(t, 'id', None) == '__all__' for t in n.targets)), [])


def origin(mod:str, name:str, depth:int=0)->str:
    "The fastamp module that binds `name` first: `from <mod> import <name>` followed through `mod`'s own imports"
    if _exists(sub := '.'.join(filter(None, [mod, name]))): return sub  # a module of a package
    if depth > 20 or not _exists(mod): return mod
    tree = ast.parse(_path(mod).read_text())
    for node in _module_level(tree):
        if not isinstance(node, ast.ImportFrom) or (base := _base(_path(mod), mod, node)) is None: continue
        for a in node.names:
            if (a.asname or a.name) == name: return origin(base, a.name, depth + 1)
            if a.name == '*' and _exists(base) and name in _all(ast.parse(_path(base).read_text())):
                return origin(base, name, depth + 1)
    return mod


def fastamp_imports(path:Path, name:str|None=None)->set:
    "Dotted names of the fastamp modules `path` (module `name`) imports, lazily too, and where its imported names live"
    name = name or _name(path)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (base := _base(path, name, node)) is not None:
            found.add(base)
            found.update(origin(base, a.name) for a in node.names if a.name != '*')
        elif isinstance(node, ast.Import):
            found.update(a.name[len('fastamp.'):] for a in node.names if a.name.startswith('fastamp.'))
    return {m for m in found if m and not m.split('.')[-1].startswith('_') and _exists(m)} - {name}


def graph():
    return {_name(p): fastamp_imports(p) for p in PKG.rglob('*.py')
            if not p.name.startswith('_') or p.name == '__init__.py' and p.parent != PKG}


def test_every_module_has_a_layer():
    missing = sorted(set(graph()) - set(LAYERS))
    assert not missing, f'modules missing from the layer map (tests/test_layering.py and nbs/design.ipynb): {missing}'


def test_no_module_imports_a_higher_layer():
    bad = [(m, d) for m, deps in graph().items() for d in deps if LAYERS[d] > LAYERS[m]]
    assert not bad, f'imports against the layering (module -> higher-layer module): {bad}'


def test_same_layer_imports_are_the_listed_one_way_ones():
    same = {(m, d) for m, deps in graph().items() for d in deps if LAYERS[d] == LAYERS[m] and LAYERS[m] < 4}
    assert same == SAME_LAYER, f'imports inside a layer that the map does not list: {same - SAME_LAYER}'
    assert not {(d, m) for m, d in SAME_LAYER} & same


def test_report_reads_the_benchmark_through_its_records_and_the_names_it_uses():
    "The records and the plan's line (read off them); the names it uses from their homes: tasks, config, store, timing"
    assert {d for d in graph()['report'] if d.startswith('bench')} == {'bench.records', 'bench.plan', 'bench.tasks',
                                                                       'bench.config', 'bench.store', 'bench.timing'}


def _design_table()->dict:
    "`{module: layer}` from the module map table of the design page"
    import json
    text = ''.join(l for c in json.loads((PKG.parent/'nbs'/'design.ipynb').read_text())['cells']
                   if c['cell_type'] == 'markdown' for l in c['source'])
    return {m: int(n) for n, m in re.findall(r'^\| (\d) \| `([\w.]+)` \|', text, re.M)}


def test_the_design_page_shows_the_map_the_tests_check():
    "Every module on the design page's map, at the layer the layering tests hold it to"
    assert _design_table() == {m: int(l) for m, l in LAYERS.items() if m != 'bench'}


def test_no_import_cycle():
    g = graph()
    def visit(m, path):
        if m in path: raise AssertionError(f"import cycle: {' -> '.join(path[path.index(m):] + [m])}")
        for d in g.get(m, ()): visit(d, path + [m])
    for m in g: visit(m, [])


def test_the_checker_sees_relative_and_absolute_imports(tmp_path):
    p = tmp_path/'x.py'
    p.write_text('from .core import a\nimport fastamp.mixup\ndef f():\n    from fastamp.models import b\n')
    assert fastamp_imports(p, 'x') == {'core', 'mixup', 'models'}
    p.write_text('from .store import a\nfrom fastamp.bench.catalog import b\n')
    assert fastamp_imports(p, 'bench.x') == {'bench.store', 'bench.catalog'}


def test_the_checker_sees_names_imported_through_another_modules_namespace(tmp_path):
    "`BenchConfig` is defined in bench.config: importing it from records' namespace is an import of config too"
    p = tmp_path/'x.py'
    p.write_text('from fastamp.bench.records import BenchConfig, run_records\nfrom .bench import run_one\n')
    assert fastamp_imports(p, 'x') == {'bench.records', 'bench.config', 'bench', 'bench.runner'}
    p.write_text('from fastamp import bench, report\nfrom .bench.records import _record\n')
    assert fastamp_imports(p, 'x') == {'bench', 'report', 'bench.records'}


def test_the_checker_sees_subpackage_imports():
    g = graph()
    assert {'bench.catalog', 'bench.training', 'bench.tasks'} <= g['bench.config']
    assert 'bench.store' in g['bench.runner'] and 'mixup' in g['bench.catalog']
    assert set(g['bench']) >= {f'bench.{m}' for m in BENCH}


def test_all_brings_every_public_name_and_the_patched_methods():
    "`from fastamp.all import *` gives what a fastai user types: every public name of layers 1 to 3"
    import importlib
    import fastamp.all as everything
    from fastai.learner import Learner
    for m in [m for m, layer in LAYERS.items() if layer <= 3 and _exists(m)]:
        missing = [n for n in importlib.import_module(f'fastamp.{m}').__all__ if not hasattr(everything, n)]
        assert not missing, f'fastamp.all lacks {missing} of fastamp.{m}'
    for meth in ('get_features', 'collapse_report', 'fine_probe', 'get_adjusted_preds'):
        assert hasattr(Learner, meth), meth


def test_bench_reexports_every_public_name_of_its_modules():
    import importlib
    import fastamp.bench as bench
    for m in BENCH:
        missing = [n for n in importlib.import_module(f'fastamp.bench.{m}').__all__ if not hasattr(bench, n)]
        assert not missing, f'fastamp.bench lacks {missing} of fastamp.bench.{m}'
