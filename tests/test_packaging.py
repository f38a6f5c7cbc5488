"""Packaging: an sdist that builds a wheel on its own, a wheel that installs and runs in a fresh environment."""
import os, subprocess, sys, sysconfig, tarfile, venv
from pathlib import Path
import pytest

pytestmark = pytest.mark.slow  # builds a wheel and a venv: left out of the fast loop (-m 'not slow')

ROOT = Path(__file__).parents[1]


def run(*cmd, **kw):
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
    return res.stdout


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    "An sdist of the repository, then a wheel built from the unpacked sdist alone (no repository files beside it)"
    pytest.importorskip('build')
    out = tmp_path_factory.mktemp('dist')
    run(sys.executable, '-m', 'build', '--sdist', '--no-isolation', '-o', out, ROOT)
    sdist, = out.glob('fastamp-*.tar.gz')
    with tarfile.open(sdist) as t: t.extractall(out/'src', filter='data')
    src, = (out/'src').iterdir()
    for f in ('settings.ini', 'LICENSE', 'README.md', 'setup.py', 'fastamp/__init__.py', 'fastamp/mixup.py'):
        assert (src/f).exists(), f'the sdist lacks {f}'
    run(sys.executable, '-m', 'build', '--wheel', '--no-isolation', '-o', out, src)
    whl, = out.glob('fastamp-*.whl')
    return whl


def test_wheel_installs_and_runs_in_a_fresh_venv(wheel, tmp_path):
    env_dir = tmp_path/'venv'
    venv.create(env_dir, with_pip=True)
    py = env_dir/'bin'/'python'
    run(py, '-m', 'pip', 'install', '-q', '--no-deps', '--no-index', wheel)
    # the dependencies come from this environment's site-packages, whose .pth files (our editable install) are not read
    env = {**os.environ, 'PYTHONPATH': sysconfig.get_paths()['purelib']}
    code = ("import fastamp, importlib, pathlib, pkgutil; "
            "mods = [m.name for m in pkgutil.iter_modules(fastamp.__path__) if not m.name.startswith('_')]; "
            "[importlib.import_module('fastamp.' + m) for m in mods]; "
            "print(pathlib.Path(fastamp.__file__).parent); print(','.join(sorted(mods)))")
    where, mods = run(py, '-c', code, env=env, cwd=tmp_path).split()
    assert Path(where).is_relative_to(env_dir), f'fastamp was imported from {where}, not from the installed wheel'
    assert {'core', 'mixup', 'models', 'cli'} <= set(mods.split(','))
    assert 'fastamp bench' in run(env_dir/'bin'/'fastamp', 'bench', '--help', env=env, cwd=tmp_path)


def test_wheel_declares_its_licence_and_imports(wheel):
    import zipfile
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith('METADATA'))).decode()
        assert any(n.endswith('LICENSE') for n in z.namelist())
    assert 'Apache-2.0' in meta
    reqs = {l.split(':', 1)[1].strip().split(';')[0].split('<')[0].split('>')[0].split('=')[0].strip()
            for l in meta.splitlines() if l.startswith('Requires-Dist:') and 'extra ==' not in l}
    assert {'torch', 'fastai', 'fastcore', 'fastprogress', 'fasttransform', 'numpy'} <= reqs
    assert 'plum-dispatch' not in reqs
