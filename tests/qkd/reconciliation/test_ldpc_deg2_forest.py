"""LDPC quasi-cyclic codes whose degree-2 variables form a forest (``build_code(..., deg2_forest=True)``).

The default construction's high-rate codes take the rate-0.9 degree table's 49 degree-2 base columns (of 256)
whatever the number of base rows (15–31 at mother rates 0.88–0.94), so the degree-2 variables close cycles in
the lifted graph, and a cycle of degree-2 variables is a codeword: weight 5 at rate 0.92.  A decoder that lands
on Alice's word XOR such a codeword matches the syndrome with wrong bits (docs/reconciliation.md, session 41).
"""

from __future__ import annotations

import hashlib
from collections import deque

import numpy as np
import pytest

from labqfl.qkd.ldpc import LdpcAlice, LdpcBob, build_code, plan_ldpc, reconcile_ldpc
from labqfl.qkd.messaging import LocalChannel, Message, MessageError
from labqfl.qkd.reconciliation import ReconciliationInputError


def _deg2_edges(code):
    """(check a, check b, variable) of every degree-2 variable of the lifted code."""
    deg = np.diff(code.var_ptr)
    checks = np.repeat(np.arange(code.m), np.diff(code.check_ptr))[code.var_edge]
    v2 = np.flatnonzero(deg == 2)
    return checks[code.var_ptr[v2]], checks[code.var_ptr[v2] + 1], v2


def _deg2_cycle(code):
    """The variables of one cycle of degree-2 variables (a codeword), or None if they form a forest."""
    a, b, v2 = _deg2_edges(code)
    adj: dict[int, list[tuple[int, int]]] = {}
    for x, y, v in zip(a.tolist(), b.tolist(), v2.tolist(), strict=True):
        adj.setdefault(x, []).append((y, v))
        adj.setdefault(y, []).append((x, v))
    seen: dict[int, tuple[int, int]] = {}  # check -> (parent check, variable to it)
    for root in adj:
        if root in seen:
            continue
        seen[root] = (-1, -1)
        todo = deque([root])
        while todo:
            c = todo.popleft()
            for nxt, v in adj[c]:
                if v == seen[c][1]:
                    continue
                if nxt not in seen:
                    seen[nxt] = (c, v)
                    todo.append(nxt)
                    continue
                # a second path to nxt closes a cycle: the variables on both tree paths up to the common ancestor
                def path(x):
                    out = []
                    while x != -1:
                        out.append(x)
                        x = seen[x][0]
                    return out
                pa, pb = path(c), path(nxt)
                common = next(x for x in pa if x in set(pb))
                vs = [v]
                for p in (pa, pb):
                    for x in p[:p.index(common)]:
                        vs.append(seen[x][1])
                return np.array(sorted(vs), np.int64)
    return None


def _forest(code) -> bool:
    a, b, _ = _deg2_edges(code)
    parent = np.arange(code.m)

    def root(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        rx, ry = root(x), root(y)
        if rx == ry:
            return False
        parent[rx] = ry
    return True


def test_default_high_rate_code_has_a_low_weight_codeword_of_degree_2_variables():
    """The default rate-0.92 code (n = 65 536, z = 256): a cycle of degree-2 variables, i.e. a codeword of
    weight ≤ 12 (5 here) — the frame a decoder may settle on with a matching
    syndrome and wrong bits.  ``deg2_forest=True`` leaves no such cycle."""
    old = build_code(65536, 0.92, 0, 256)
    word = np.zeros(old.n, np.uint8)
    cyc = _deg2_cycle(old)
    assert cyc is not None and cyc.size <= 12
    word[cyc] = 1
    assert not old.syndrome(word).any()  # a codeword
    new = build_code(65536, 0.92, 0, 256, deg2_forest=True)
    assert new.deg2_forest and _deg2_cycle(new) is None and _forest(new)


@pytest.mark.parametrize("rate", [0.54, 0.87, 0.88, 0.9, 0.94])
def test_deg2_forest_codes_have_no_cycle_of_degree_2_variables(rate):
    code = build_code(65536, rate, 0, 256, deg2_forest=True)
    assert _forest(code)
    nb, mb = code.n // code.z, code.m // code.z
    deg = np.bincount(code.base_col, minlength=nb)
    assert (deg == 2).sum() <= mb - 1
    assert code.forced_4cycles == 0
    # same rate and base graph size as the default code of that rate
    old = build_code(65536, rate, 0, 256)
    assert (code.m, code.n) == (old.m, old.n)


def test_deg2_forest_leaves_codes_alone_where_the_rule_does_not_bind():
    """At the mother rates of QBER 2–6 % (0.84, 0.72, 0.62) the default PEG already keeps the degree-2
    columns a forest: the same code bit for bit."""
    for rate in (0.62, 0.72, 0.84):
        a, b = build_code(65536, rate, 0, 256), build_code(65536, rate, 0, 256, deg2_forest=True)
        assert np.array_equal(a.check_var, b.check_var) and np.array_equal(a.untainted, b.untainted)
        assert np.array_equal(a.base_shift, b.base_shift)


def test_default_codes_are_those_of_before():
    """``deg2_forest`` off (the default) builds the codes of before bit for bit (sha-256 of the parity-check
    matrix and the untainted positions, taken at 66b8680)."""
    pinned = {
        (65536, 0.54, 256): "f35f51195b31c4e6a1911f2fda6f9cd51414b3a1a0b90214fbe8c6fa112745db",
        (65536, 0.87, 256): "fbbbb1ed79bd99191c8ac78857e8d540274969909bfaff932914cf94a5c3265a",
        (65536, 0.92, 256): "bc1077662f0e592466cf0f5905a5588a29d5d2c2f0bad406c5cccfd985cd5dfc",
        (16384, 0.9, 0): "d2e4281c7b23891ad39a159a7da204f06f0001f99e28ceb018e68f92be8240f1",
    }
    for (n, rate, z), want in pinned.items():
        c = build_code(n, rate, 0, z)
        h = hashlib.sha256()
        for arr in (c.check_ptr, c.check_var, c.untainted):
            h.update(np.ascontiguousarray(arr, np.int64).tobytes())
        assert h.hexdigest() == want, (n, rate, z)


def test_deg2_forest_travels_in_ldpc_init_and_alice_builds_the_same_code():
    q = 0.01
    plan = plan_ldpc(q, deg2_forest=True)
    assert plan.deg2_forest
    rng = np.random.default_rng(5)
    x = rng.integers(0, 2, 3 * plan.key_bits_per_frame, dtype=np.uint8)
    y = x.copy()
    y[rng.choice(x.size, int(round(q * x.size)), replace=False)] ^= 1
    alice = LdpcAlice(x, filler_rng=np.random.default_rng(1))
    sent = []

    class Spy(LocalChannel):
        def request(self, msg: Message) -> Message:
            sent.append(msg)
            return super().request(msg)

    res = LdpcBob(y, q, plan=plan).run(Spy(alice))
    assert sent[0].kind == "ldpc/init" and sent[0].fields["deg2_forest"] == 1
    assert alice._code is build_code(plan.code_n, plan.rate, plan.code_seed, plan.z, True)
    assert res.success and np.array_equal(res.corrected, x)
    # the default plan's init message is the one of before: no deg2_forest field
    sent.clear()
    LdpcBob(y, q).run(Spy(LdpcAlice(x, filler_rng=np.random.default_rng(1))))
    assert "deg2_forest" not in sent[0].fields
    res2 = reconcile_ldpc(x, y, q, seed=1, deg2_forest=True)
    assert res2.success and np.array_equal(res2.corrected, x)


def test_deg2_forest_bad_input_is_refused():
    with pytest.raises(ReconciliationInputError, match="deg2_forest"):
        build_code(16384, 0.9, 0, 0, deg2_forest=True)
    with pytest.raises(ReconciliationInputError, match="deg2_forest"):
        plan_ldpc(0.02, decoder="bp", deg2_forest=True)
    alice = LdpcAlice(np.zeros(1000, np.uint8))
    with pytest.raises(MessageError, match="deg2_forest"):
        alice.handle(Message("ldpc/init", {"N": 1000, "code_n": 65536, "rate": 0.9, "code_seed": 0, "z": 256, "d": 0,
                                           "max_reveal": 10, "deg2_forest": 2}))
