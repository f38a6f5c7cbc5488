"""Reliability round 4 (#39), the items left: shards that disagree (7), what killed runs and full disks leave behind
(14), late errors on sizes, caches and folders of one name (16), the Hub's retries offline (17), decode workers of a
killed process (13)."""
import json
from pathlib import Path
import pytest
from fastamp import bench
from fastamp.cli import main

ARGV = ['bench', '--task', 'lt', '--methods', 'erm', '--seeds', '0,1', '--rhos', '10', '--epochs', '1']


def _bench(out, *more):
    return main([*ARGV, '--out', str(out), *more])


def test_a_shard_with_other_settings_than_the_sweep_on_out_is_refused_naming_the_option(tmp_path, capsys):
    out = tmp_path / 'out'
    assert _bench(out, '--shard', '0/2') == 0
    capsys.readouterr()
    assert _bench(out, '--shard', '1/2', '--epochs', '2', '--lr', '0.02') == 2          # before any run
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith('fastamp: error: --shard 1/2: --epochs 2 (that sweep\'s: 1); ')
    assert "--lr 0.02 (that sweep's: 0.005)" in err and '(1 of its 2 runs finished)' in err
    assert 'give every shard the same options but --shard, or another --out' in err
    assert _bench(out, '--shard', '1/3') == 2 and "--shard 1/3 (that sweep's: i/2)" in capsys.readouterr().err
    assert len(list(out.glob('lt/runs/*.json'))) == 1
    assert _bench(out, '--shard', '1/2') == 0                                               # the same sweep: its half
    assert len(list(out.glob('lt/runs/*.json'))) == 2
    assert _bench(out, '--shard', '0/2', '--epochs', '2') == 0  # that sweep is finished: a new one may start
