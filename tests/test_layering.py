"""The module map of DESIGN.md, checked on the package's own imports: no module imports one above it, no cycle."""
import ast
from pathlib import Path

PKG = Path(__file__).parents[1]/'fastamp'
LAYERS = {  # layer of each module; `all` re-exports everything and sits above the rest
    'core': 1, 'metrics': 1, 'models': 1, 'datasets': 1,
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
