"""bench.instructions: the workloads it counts, and a clear refusal of others."""

import pytest

from bench import instructions


def test_an_unknown_workload_is_refused_with_the_known_ones(capsys):
    with pytest.raises(SystemExit) as exc:
        instructions.main(["ingest", "bogus"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown workload bogus" in err
    assert all(name in err for name in instructions.NAMES)


def test_the_child_script_covers_every_workload():
    for name in instructions.NAMES:
        assert f'name == "{name}"' in instructions._CHILD
