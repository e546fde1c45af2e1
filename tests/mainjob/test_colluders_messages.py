"""Review s37 F8: ``--colluders 1`` without ``--self-masks`` said "expected a number >= 0 with --self-masks over
nodes" (1 is >= 0). Each cause now gets its own message, as ``--threshold`` does ("needs --self-masks")."""

from __future__ import annotations

import pytest

from labqfl.errors import ConfigError
from labqfl.mainjob import JobSettings


@pytest.mark.parametrize(("kw", "want", "not_want"), [
    ({"colluders": 1}, "--colluders 1: needs --self-masks", "expected a number"),
    ({"colluders": 0, "self_masks": True, "nodes": False}, "--colluders 0: needs the run over nodes", "expected"),
    ({"colluders": -1, "self_masks": True, "nodes": True}, "--colluders -1: expected a number >= 0", "needs"),
])
def test_each_colluders_refusal_names_its_cause(kw: dict[str, object], want: str, not_want: str) -> None:
    with pytest.raises(ConfigError) as err:
        JobSettings(**kw).validate()  # type: ignore[arg-type]
    assert str(err.value).startswith(want) and not_want not in str(err.value), str(err.value)


def test_a_valid_colluders_is_accepted() -> None:  # no error
    JobSettings(colluders=0, self_masks=True, nodes=True).validate()
