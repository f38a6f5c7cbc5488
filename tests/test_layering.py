"""The module map of DESIGN.md, checked on the package's own imports: no module imports one above it, no cycle."""
import ast
from pathlib import Path

PKG = Path(__file__).parents[1]/'fastamp'
LAYERS = {  # layer of each module; `all` re-exports everything and sits above the rest
    'core': 1, 'hooks': 1, 'metrics': 1, 'models': 1, 'datasets': 1,
    'losses': 2, 'mixup': 2, 'data': 2, 'devicedata': 2,
    'transfer': 3, 'evaluate': 3,
    'bench': 4, 'report': 4,
    'cli': 5,
    'all': 6,
}


def fastamp_imports(path:Path)->set:
    "Names of the fastamp modules that `path` imports, lazily imported ones included"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ''
            if node.level == 1: found.add(mod.split('.')[0] if mod else None)
            elif mod.startswith('fastamp.'): found.add(mod.split('.')[1])
            elif mod == 'fastamp': found.update(a.name for a in node.names)
            if node.level == 1 and not mod: found.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split('.')[1] for a in node.names if a.name.startswith('fastamp.'))
    return {m for m in found if m and not m.startswith('_') and (PKG/f'{m}.py').exists()}


def graph():
    return {p.stem: fastamp_imports(p) for p in PKG.glob('*.py') if not p.stem.startswith('_')}


def test_every_module_has_a_layer():
    missing = sorted(set(graph()) - set(LAYERS))
    assert not missing, f'modules missing from the layer map (tests/test_layering.py and DESIGN.md): {missing}'


def test_no_module_imports_a_higher_layer():
    bad = [(m, d) for m, deps in graph().items() for d in deps if LAYERS[d] > LAYERS[m]]
    assert not bad, f'imports against the layering (module -> higher-layer module): {bad}'


def test_no_import_cycle():
    g = graph()
    def visit(m, path):
        if m in path: raise AssertionError(f"import cycle: {' -> '.join(path[path.index(m):] + [m])}")
        for d in g.get(m, ()): visit(d, path + [m])
    for m in g: visit(m, [])


def test_the_checker_sees_relative_and_absolute_imports(tmp_path):
    p = tmp_path/'x.py'
    p.write_text('from .core import a\nimport fastamp.mixup\ndef f():\n    from fastamp.models import b\n')
    assert fastamp_imports(p) == {'core', 'mixup', 'models'}


def test_all_brings_every_public_name_and_the_patched_methods():
    "`from fastamp.all import *` gives what a fastai user types: every public name of layers 1 to 3"
    import importlib
    import fastamp.all as everything
    from fastai.learner import Learner
    for m in [m for m, layer in LAYERS.items() if layer <= 3 and (PKG/f'{m}.py').exists()]:
        missing = [n for n in importlib.import_module(f'fastamp.{m}').__all__ if not hasattr(everything, n)]
        assert not missing, f'fastamp.all lacks {missing} of fastamp.{m}'
    for meth in ('get_features', 'collapse_report', 'fine_probe', 'get_adjusted_preds'):
        assert hasattr(Learner, meth), meth
