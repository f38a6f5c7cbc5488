"""The docs a reader sees: every notebook is in the sidebar, the pages keep their outputs (figures, tables, `show_doc`),
no committed output is an error, and each documentation page renders to HTML with its figures embedded.

The outputs are written by `python tools/execute_docs.py` (README, Development)."""
import argparse, json, os, re, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).parents[1]
NBS = ROOT/'nbs'
sys.path.insert(0, str(ROOT/'tools'))
from execute_docs import doc_notebooks, skipped, SKIP_FLAGS  # noqa: E402

READER_PAGES = [NBS/'index.ipynb', NBS/'method.ipynb', *sorted((NBS/'tutorials').glob('*.ipynb'))]
MODULE_PAGES = [p for p in doc_notebooks() if p not in READER_PAGES]
PLOTS = re.compile(r'\bplt\.|\.plot\(|\bplot_\w+\(|\.show_batch\(|\.show_results\(|\bsubplots\(')


class _Cell(dict):
    "A notebook cell with attribute access, as execnb's cells (so `skipped` reads both)"
    __getattr__ = dict.__getitem__
    @property
    def source(self): return ''.join(self['source'])


def cells(path: Path) -> list:
    return [_Cell(c) for c in json.loads(path.read_text())['cells']]


def run_cells(path: Path) -> list:
    "The code cells that CI runs (and `tools/execute_docs.py` saves with outputs)"
    return [c for c in cells(path) if not skipped(c, SKIP_FLAGS)]


def ids(paths): return [str(p.relative_to(NBS)) for p in paths]


def is_error(out: dict) -> bool:
    text = ''.join(out.get('text', '')) + ''.join(out.get('data', {}).get('text/plain', ''))
    return out['output_type'] == 'error' or 'Traceback (most recent call last)' in text


def test_sidebar_lists_every_notebook():
    listed = set(re.findall(r'([\w./-]+\.ipynb)', (NBS/'sidebar.yml').read_text()))
    pages = {str(p.relative_to(NBS)) for p in doc_notebooks()}
    assert not pages - listed, f"notebooks missing from nbs/sidebar.yml: {sorted(pages - listed)}"
    assert not listed - pages, f"nbs/sidebar.yml lists pages that do not exist: {sorted(listed - pages)}"


def test_the_committed_sidebar_is_the_one_deployed_with_the_reader_pages_first():
    "nbdev_docs rewrites sidebar.yml unless custom_sidebar is set; readers meet home, method and tutorials first"
    from nbdev.config import get_config
    from nbdev.quarto import nbdev_sidebar
    sidebar = NBS/'sidebar.yml'
    before = sidebar.read_text()
    assert get_config(path=ROOT).custom_sidebar, "settings.ini: set custom_sidebar = True, else deploys replace it"
    cwd = Path.cwd()
    try: os.chdir(ROOT); nbdev_sidebar()  # what the deploy runs: must leave the committed sidebar as it is
    finally: os.chdir(cwd); after = sidebar.read_text(); sidebar.write_text(before)
    assert after == before, "nbdev_sidebar rewrote nbs/sidebar.yml"
    listed = re.findall(r'([\w./-]+\.ipynb)', before)
    tutorials = sorted(str(p.relative_to(NBS)) for p in (NBS/'tutorials').glob('*.ipynb'))
    first = ['index.ipynb', 'method.ipynb']
    assert listed[:2] == first and sorted(listed[2:2 + len(tutorials)]) == tutorials, listed[:2 + len(tutorials)]


@pytest.mark.parametrize('path', doc_notebooks(), ids=ids(doc_notebooks()))
def test_no_committed_output_is_an_error(path):
    bad = [i for i, c in enumerate(cells(path)) for o in c.get('outputs', []) if is_error(o)]
    assert not bad, f"{path.name}: cells {bad} were committed with an error: rerun tools/execute_docs.py {path}"


@pytest.mark.parametrize('path', READER_PAGES, ids=ids(READER_PAGES))
def test_every_plot_is_committed_as_an_image(path):
    blank = [i for i, c in enumerate(run_cells(path)) if PLOTS.search(c.source)
             and not any('image/png' in o.get('data', {}) for o in c.get('outputs', []))]
    assert not blank, (f"{path.name}: plotting cells {blank} (counting run cells) have no image output: "
                       f"run `python tools/execute_docs.py {path.relative_to(ROOT)}` and commit the notebook")


@pytest.mark.parametrize('path', READER_PAGES, ids=ids(READER_PAGES))
def test_reader_pages_keep_their_outputs(path):
    run = run_cells(path)
    assert run and sum(bool(c.get('outputs')) for c in run) >= len(run) // 3, \
        f"{path.name} was committed without its outputs: run tools/execute_docs.py on it"


@pytest.mark.parametrize('path', MODULE_PAGES, ids=ids(MODULE_PAGES))
def test_module_pages_keep_show_doc(path):
    "Each `show_doc` call shows its page section (a reader sees only a cell's last value: one call per cell)"
    shown = lambda c: sum(o['output_type'] in ('display_data', 'execute_result') for o in c.get('outputs', []))
    calls = lambda c: len(re.findall(r'^show_doc\(', c.source, re.M))
    empty = [i for i, c in enumerate(run_cells(path)) if calls(c) and shown(c) < calls(c)]
    assert not empty, (f"{path.name}: show_doc cells {empty} (counting run cells) show fewer docs than they call: "
                       "one show_doc per cell, then run tools/execute_docs.py on it")


@pytest.mark.parametrize('path', READER_PAGES, ids=ids(READER_PAGES))
def test_page_renders_with_its_figures(path):
    "Where Quarto is absent: nbconvert's HTML has every committed figure embedded and no error"
    nbconvert, nbformat = pytest.importorskip('nbconvert'), pytest.importorskip('nbformat')
    nb = nbformat.reads(path.read_text(), as_version=4)
    html, _ = nbconvert.HTMLExporter(template_name='basic').from_notebook_node(nb)
    n_figs = sum('image/png' in o.get('data', {}) for c in nb.cells for o in c.get('outputs', []))
    assert html.count('src="data:image/png;base64,') == n_figs, f"{path.name}: a figure is not embedded in the HTML"
    assert 'output_error' not in html, f"{path.name}: the HTML shows an error output"
    if any(PLOTS.search(c.source) for c in run_cells(path)): assert n_figs, f"{path.name} draws plots but shows none"


# --- recommendations follow the claims table (#35 item 7; #36 item 5)

def _claims_table() -> str:
    "The method page's 'Claims against evidence' section: its table and the recommendations read from it"
    text = '\n'.join(c.source for c in cells(NBS/'method.ipynb') if c['cell_type'] == 'markdown')
    return text[text.index('## Claims against evidence'):]


def _recommendation_texts() -> dict:
    "Where the docs recommend: README's evidence summary, results/README's recommendations, the tutorials' advice"
    readme = (ROOT/'README.md').read_text()
    results = (ROOT/'results'/'README.md').read_text()
    tutorials = {p.name: '\n'.join(c.source for c in cells(p) if c['cell_type'] == 'markdown')
                 for p in sorted((NBS/'tutorials').glob('*.ipynb'))}
    return {'README.md': readme[readme.index('**What the evidence says**'):readme.index('## Data')],
            'results/README.md': results[results.index('## Recommended settings'):], **tutorials}


def test_every_method_a_recommendation_runs_is_compared_in_the_claims_table():
    "A `fastamp bench ... --methods a,b` quoted as advice names only methods whose comparisons the claims table cites"
    claims = _claims_table()
    texts = {**_recommendation_texts(), 'method page': claims[claims.index('**Recommendations'):]}
    quoted = {(where, m) for where, t in texts.items()
              for ms in re.findall(r'--methods\s+([\w,.\-]+)', t) for m in ms.split(',')}
    assert quoted, 'no recommended command found'
    missing = sorted((w, m) for w, m in quoted if f'`{m}`' not in claims)
    assert not missing, f"methods recommended but not compared in the claims table: {missing}"


# The names a reader meets for a catalog method in prose or code, where the catalog's key is not written out
NAMED = {'midpoint': r'MidpointMixup\(\)|\bAM-mixup\b', 'midpoint-pooled': r"module='pooled'",
         'midpoint-classmean': r"partner='class_mean'", 'midpoint-perpair': r'per_pair=True',
         'manifold': r'Manifold Mixup|ManifoldMixup', 'remix-drw': r'Remix-DRW', 'ldam-drw': r'LDAM-DRW',
         'la': r'logit-adjusted loss|LogitAdjustedLoss', 'mixup': r'[Ii]nput mixup'}


def _claims_rows() -> list:
    "The rows of the method page's claims tables (the paper's AM-mixup, then fastamp's variants)"
    return [r for r in _claims_table().splitlines() if r.startswith('| **')]


def _recommendations() -> list:
    "`(where, sentence)` for each sentence of the docs' advice that tells a reader what to use or recommends it"
    texts = {**_recommendation_texts(), 'method page': _claims_table()[_claims_table().index('**Recommendations'):]}
    prose = {where: '\n'.join(l for l in t.splitlines() if not l.startswith('|')) for where, t in texts.items()}
    chunks = [(where, ' '.join(c.split())) for where, t in prose.items()  # paragraphs, bullets and headings apart
              for c in re.split(r'\n\s*\n|\n\s*- |\n(?=#)', t)]
    return [(where, s) for where, c in chunks for s in re.split(r'(?<=[.;:])\s+(?=[A-Z*`(])', c)
            if re.search(r'\b(?:[Uu]se|[Rr]ecommend\w*)\b', s)]


def test_every_method_a_recommendation_names_has_a_row_in_the_claims_table():
    """Each method a recommending sentence names (a catalog key in backticks, or its class or prose name) is compared
    in a row of the claims tables, so that no advice rests on a comparison the tables do not hold (#36 item 5)"""
    from fastamp.bench import METHODS
    rows, sentences = _claims_rows(), _recommendations()
    assert len(sentences) >= 8, sentences
    named = {(where, m, s) for where, s in sentences for m in METHODS
             if f'`{m}`' in s or (m in NAMED and re.search(NAMED[m], s))}
    assert {'midpoint', 'remix-drw', 'manifold', 'midpoint-pooled'} <= {m for _, m, _ in named}, named
    missing = sorted((w, m, s[:100]) for w, m, s in named if not any(f'`{m}`' in r for r in rows))
    assert not missing, f"methods recommended with no row of the claims table comparing them: {missing}"


def test_the_claims_tables_separate_the_papers_method_from_fastamps_variants():
    "The paper's AM-mixup (the default) has its own table; each variant a row of its own, in the variants' table"
    claims = _claims_table()
    paper, variants = claims.index("**The paper's AM-mixup**"), claims.index("**fastamp's variants**")
    assert paper < variants < claims.index('**Recommendations')
    for v in ("module='pooled'", "partner='class_mean'"):
        assert any(f'**`{v}`**' in r for r in claims[variants:].splitlines() if r.startswith('| **')), v
    broadening = next(r for r in claims[paper:variants].splitlines() if r.startswith('| **Moderate broadening**'))
    assert 'midpoint-pooled' not in broadening, "the paper's row reads the default, not fastamp's variant"
    assert all(d in broadening for d in ('digits', 'Fashion-MNIST head one', 'Fashion-MNIST head two',
                                         'CIFAR-10 head one', 'CIFAR-10 head two')), 'a dataset or head is missing'


def test_no_gpu_figure_and_no_stale_line_where_the_docs_advise():
    """GPU figures wait for committed records (the method page says so); lines a results page corrected, or claims
    made without a paired comparison, are gone (#36 item 5)"""
    method = '\n'.join(c.source for c in cells(NBS/'method.ipynb') if c['cell_type'] == 'markdown')
    assert 'not yet measured on a GPU' in method
    texts = {**_recommendation_texts(), 'method page': method}
    stale = re.compile(r'H100|H200|0\.9412 is the best few-shot|ahead of Remix-DRW')
    assert not [(w, m.group()) for w, t in texts.items() for m in stale.finditer(t)]


def test_the_docs_use_the_verdicts_labels_not_the_old_rule():
    "The old labels ('ahead on every seed', 'within noise') appear nowhere the docs advise from"
    old = re.compile(r'ahead on every seed|behind on every seed|within noise|one seed: no verdict')
    texts = {**_recommendation_texts(), 'method page': _claims_table()}
    assert not [w for w, t in texts.items() if old.search(t)]


def _quoted_commands() -> set:
    """`(page, command)` for every `fastamp bench|plan|report ...` the docs quote for a reader to run (READMEs, the
    notebooks' prose); a results page's `Command:` line records what ran then, and a bare name (`fastamp plan`,
    `fastamp bench --plan`) is a mention, not a command"""
    texts = {str(p.relative_to(ROOT)): p.read_text() for p in [ROOT/'README.md', ROOT/'results'/'README.md']}
    texts |= {str(p.relative_to(ROOT)): '\n'.join(c.source for c in cells(p) if c['cell_type'] == 'markdown')
              for p in doc_notebooks()}
    found = set()
    for page, t in texts.items():
        t = t.replace('\\\n', ' ')
        for cmd in re.findall(r'`(fastamp (?:bench|plan|report)\b[^`]*)`', t) + re.findall(
                r'^\s*(fastamp (?:bench|plan|report)\b[^\n`]*)$', t, re.M):
            found.add((page, ' '.join(re.split(r'\s+#|, then | \(', cmd)[0].split())))
    return {(page, cmd) for page, cmd in found if not _a_mention(cmd)}


def _a_mention(cmd: str) -> bool:
    "A command's name alone, or ending on an option that wants a value: named in a sentence, not given to run"
    from fastamp.cli import _parser
    words = cmd.split()[1:]
    if len(words) == 1: return True
    sub = _parser()._subparsers._group_actions[0].choices[words[0]]
    last = next((a for a in sub._actions if words[-1] in a.option_strings), None)
    return isinstance(last, argparse._StoreAction) and last.nargs is None


def _as_run(cmd: str, folder: Path) -> list:
    """The argv of a quoted command, its placeholders made real: `<a folder>`, DIR and path/to/... name `folder`, and
    `--weights <file>` a state dict of the `--arch` it names (the settings' checks read the file's tensors)"""
    cmd = re.sub(r'--methods <[^>]*>', '--methods erm', cmd)
    if m := re.search(r'--weights (\S+)', cmd):
        import torch
        from torchvision import models
        weights = folder.with_name(folder.name + '-weights.pth')
        torch.save(models.get_model(re.search(r'--arch (\S+)', cmd)[1]).state_dict(), weights)
        cmd = cmd.replace(m.group(), f'--weights {weights}')
    cmd = re.sub(r'<[^>]*>|\bDIR\b|\bpath/to/\S+|\S+\.tar\.gz', str(folder), cmd)
    return cmd.split()[1:]


@pytest.mark.parametrize('page,cmd', sorted(_quoted_commands()))
def test_every_command_the_docs_quote_is_one_fastamp_takes(page, cmd, tmp_path):
    "Each option of a quoted command exists, takes the value given, and its settings pass the checks run before work"
    from fastamp.cli import _parser, bench_settings
    from fastamp.bench import check_settings
    argv = [a for a in _as_run(cmd, tmp_path) if a not in ('[MODE]',)]
    try: args = _parser().parse_args(argv)
    except SystemExit as e:
        if e.code == 0: return  # --help
        pytest.fail(f"{page}: `{cmd}` is refused by fastamp's parser (exit {e.code})")
    if args.cmd == 'bench' and not args.list and not args.plan: check_settings(bench_settings(args))


@pytest.mark.parametrize('path', sorted((NBS/'tutorials').glob('*.ipynb')), ids=lambda p: p.name)
def test_every_tutorial_opens_with_its_answer_and_where_it_comes_from(path):
    "Right under its title: the question, the answer from the claims table, a link to it and to a results page"
    first = cells(path)[1]
    assert first['cell_type'] == 'markdown' and '**The question**' in first.source and '**The answer**' in first.source
    assert '(../method.ipynb#claims-against-evidence)' in first.source, 'link the claims table'
    pages = re.findall(r'\(https://github\.com/fastamp/fastamp/blob/main/(results/[\w.]+\.md)\)', first.source)
    assert pages and all((ROOT/p).exists() for p in pages), pages
    assert any(c.source.startswith('## Claims against evidence') for c in cells(NBS/'method.ipynb')), 'anchor moved'


@pytest.mark.parametrize('path', READER_PAGES, ids=ids(READER_PAGES))
def test_reader_pages_link_the_results_pages_they_cite(path):
    "A results page is cited as a link that works on GitHub and on the site, never as code text"
    prose = '\n'.join(c.source for c in cells(path) if c['cell_type'] == 'markdown')
    as_code = [m for m in re.findall(r'`(?:results/)?([\w.]+\.md)`', prose) if (ROOT/'results'/m).exists()]
    assert not as_code, f"{path.name}: link these instead of quoting them: {as_code}"
    links = re.findall(r'\]\(https://github\.com/fastamp/fastamp/blob/main/(results/[\w.]+\.md)\)', prose)
    assert all((ROOT/l).exists() for l in links), [l for l in links if not (ROOT/l).exists()]


NOISE = [(re.compile(r'NoneType=None'), 'an untyped parameter (`x=None`: give it a type, `x:int|None=None`)'),
         (re.compile(r'(?<![\w.])/(?:tmp|work|root|home|Users|var/folders)/'), 'a path of the machine that ran it'),
         (re.compile(r'^\w*(?:Warning|Error): |Traceback \(most recent call last\)|^fastamp: error:', re.M),
          'a warning, an error or a traceback'),
         (re.compile(r'<progress\b|\d+\.\d+% \[\d+/\d+ [\d:]+<'), 'a progress bar (fastprogress: `with learn.no_bar()`)')]


def _noise(out: dict) -> list:
    "What a reader would have to skip in one committed output"
    if out.get('output_type') == 'stream' and out.get('name') == 'stderr': return ['stderr: ' + ''.join(out['text'])[:80]]
    text = ''.join(out.get('text', '')) + ''.join(''.join(v) for k, v in out.get('data', {}).items()
                                                  if k.startswith('text/') and isinstance(v, (list, str)))
    return [what for pat, what in NOISE if pat.search(text)]


@pytest.mark.parametrize('path', doc_notebooks(), ids=ids(doc_notebooks()))
def test_no_committed_output_holds_noise(path):
    "No warning, stderr, traceback, error line, progress bar, `NoneType=None` or machine path in what a reader sees"
    bad = [(i, w) for i, c in enumerate(cells(path)) for o in c.get('outputs', []) for w in _noise(o)]
    assert not bad, f"{path.relative_to(ROOT)}: cells {bad}: fix the cell, then run tools/execute_docs.py on it"


def test_the_docs_quote_commands_for_the_command_test_to_check():
    "The parametrised command test above has cases: a regex that stopped matching would leave it empty, a skip"
    assert len(_quoted_commands()) >= 15, sorted(_quoted_commands())
