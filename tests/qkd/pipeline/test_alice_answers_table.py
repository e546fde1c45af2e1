"""``labqfl.qkd.twoparty._ALICE_ANSWERS`` — Alice's answer(s) to each of Bob's requests, the only messages Cj
accepts from Ci while reconciliation runs (``PairEndJ._out_of_turn``) — is a hand-kept copy of what the engines
send (review s40 protorev F1). Tied here to the message schema (``CJ_MESSAGES``: Bob's requests, ``CI_MESSAGES``:
Alice's answers) and to the engines themselves: the ``Message`` kinds in the source of ``CascadeBob``/``LdpcBob``
and ``CascadeAlice``/``LdpcAlice``, and the (request, answer) pairs of real runs, Bob and Alice built as Cj and Ci
build them (``twoparty._bob``, ``twoparty._alice``). A new request or answer kind in an engine fails here instead
of refusing every honest block at run time.  (The refusal of a request with no entry, an internal error naming it,
is tested in tests/qkd/pipeline/test_cj_out_of_turn.py.)"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Iterator

import pytest

from labqfl.bench import noisy_frame
from labqfl.qkd import cascade, ldpc
from labqfl.qkd.messaging import LocalChannel, Message
from labqfl.qkd.twoparty import _ALICE_ANSWERS, CI_MESSAGES, CJ_MESSAGES, _alice, _bob

ENGINES = ("cascade", "ldpc")  # twoparty._bob / _alice; each engine's messages are named "<engine>/…"
BOBS, ALICES = (cascade.CascadeBob, ldpc.LdpcBob), (cascade.CascadeAlice, ldpc.LdpcAlice)
TABLE = {(req, ans) for req, answers in _ALICE_ANSWERS.items() for ans in answers}


def _engine_kinds(schema: dict) -> set[str]:
    return {k for k in schema if k.split("/")[0] in ENGINES}


def _kinds(node: ast.expr) -> Iterator[str]:
    """The message kinds a ``Message(...)`` call's first argument can take: a string, or a conditional of them."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.IfExp):
        yield from _kinds(node.body)
        yield from _kinds(node.orelse)
    else:
        raise AssertionError(f"a Message kind this test cannot read: {ast.unparse(node)!r}")


def _sent(cls: type) -> set[str]:
    """Every kind of ``Message(kind, …)`` in the source of ``cls`` (what it sends or answers)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    return {k for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
            and n.func.id == "Message" for k in _kinds(n.args[0])}


def test_every_request_of_bobs_in_the_schema_and_the_engines_has_an_entry_and_no_other():
    bob_sent = set().union(*map(_sent, BOBS))
    assert bob_sent == _engine_kinds(CJ_MESSAGES), "Bob's requests in the engines differ from CJ_MESSAGES"
    assert set(_ALICE_ANSWERS) == bob_sent


def test_every_answer_in_the_table_is_one_alice_sends_and_in_the_schema():
    answers = {ans for _, ans in TABLE}
    alice_sent = set().union(*map(_sent, ALICES))
    assert answers == alice_sent, "the table's answers differ from the kinds Alice's source sends"
    assert answers == _engine_kinds(CI_MESSAGES), "the table's answers differ from the engine kinds of CI_MESSAGES"


class _Recording:
    """Alice, recording each (request, answer) pair of kinds."""

    def __init__(self, alice) -> None:  # type: ignore[no-untyped-def]
        self.alice, self.pairs = alice, set()

    def handle(self, request: Message) -> Message:
        answer = self.alice.handle(request)
        self.pairs.add((request.kind, answer.kind))
        return answer


@pytest.mark.parametrize("engine", ENGINES)
def test_the_pairs_of_a_real_run_are_the_tables(engine):
    """Cascade: a run and its continuation (``ec/more``), with rounds that open passes (``cascade/block-parities``)
    and rounds of bisections only (``cascade/parities``); LDPC: a run with a reveal round (``ldpc/filler``)."""
    x, y = noisy_frame(20_000, 0.02 if engine == "cascade" else 0.03, 7)
    alice = _Recording(_alice(engine, x))
    bob = _bob(engine, y, 0.02 if engine == "cascade" else 0.03, 4 if engine == "cascade" else 1)
    channel = LocalChannel(alice)
    bob.run(channel)
    if engine == "cascade":
        bob.more(channel)
    assert alice.pairs == {p for p in TABLE if p[0].startswith(engine + "/")}
