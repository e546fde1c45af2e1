"""A mistyped command's suggestion is printed once (review s36 F19: ``labqfl staton show`` printed "Did you mean
'station'? Did you mean 'station'?": typer writes its suggestion into the message and click ≥ 8.2 appends its own)."""

from __future__ import annotations

import pytest

from labqfl.cli import main


@pytest.mark.parametrize(("argv", "expected"), [
    (["staton", "show"], "error: No such command 'staton'. Did you mean 'station'? (see 'labqfl -h')"),
    (["keys", "sttus"], "error: No such command 'sttus'. Did you mean 'status'? (see 'labqfl keys -h')"),
    (["run", "--duraton", "5"], "error: No such option '--duraton'. Did you mean '--duration'? (see 'labqfl run -h')"),
])
def test_a_suggestion_is_printed_once(argv: list[str], expected: str, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.argv", ["labqfl", *argv])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.strip() == expected, err
    assert err.count("Did you mean") == 1
