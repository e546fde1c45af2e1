"""LDPC construction 1: quasi-cyclic codes whose degree-2 variables form a forest (``build_code(..., construction=1)``).

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
    syndrome and wrong bits.  ``construction=1`` leaves no such cycle."""
    old = build_code(65536, 0.92, 0, 256)
    word = np.zeros(old.n, np.uint8)
    cyc = _deg2_cycle(old)
    assert cyc is not None and cyc.size <= 12
    word[cyc] = 1
    assert not old.syndrome(word).any()  # a codeword
    new = build_code(65536, 0.92, 0, 256, construction=1)
    assert new.construction == 1 and _deg2_cycle(new) is None and _forest(new)


@pytest.mark.parametrize("rate", [0.88, 0.9, 0.91, 0.94])
def test_construction_1_codes_have_no_cycle_of_degree_2_variables(rate):
    code = build_code(65536, rate, 0, 256, construction=1)
    assert code.construction == 1 and _forest(code)
    nb, mb = code.n // code.z, code.m // code.z
    deg = np.bincount(code.base_col, minlength=nb)
    assert (deg == 2).sum() <= mb - 1
    assert code.forced_4cycles == 0
    # same rate and base graph size as the default code of that rate
    old = build_code(65536, rate, 0, 256)
    assert (code.m, code.n) == (old.m, old.n)


def test_construction_1_is_construction_0_up_to_rate_0875():
    """At and below mother rate 0.875 (QBER above ≈ 1.2 %) construction 1 builds construction 0's code — the
    same object, so the init message carries no construction field and Alice builds it too.  (A degree-2
    forest there cost f ≈ +0.01 at QBER 2.5–3 %, docs/reconciliation.md session 41.)"""
    for rate in (0.54, 0.81, 0.87):
        a, b = build_code(65536, rate, 0, 256), build_code(65536, rate, 0, 256, construction=1)
        assert a is b and b.construction == 0


def test_default_codes_are_those_of_before():
    """Construction 0 (the default) builds the codes of before bit for bit (sha-256 of the parity-check
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


def test_construction_travels_in_ldpc_init_and_alice_builds_the_same_code():
    q = 0.01
    plan = plan_ldpc(q, construction=1)
    assert plan.construction == 1 and plan.rate == 0.9  # no low-QBER margin (0.87 with construction 0)
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
    assert sent[0].kind == "ldpc/init" and sent[0].fields["construction"] == 1
    assert alice._code is build_code(plan.code_n, plan.rate, plan.code_seed, plan.z, 1)
    assert res.success and np.array_equal(res.corrected, x)
    # a construction-0 plan's init message is the one of before: no construction field
    sent.clear()
    LdpcBob(y, q, plan=plan_ldpc(q, construction=0)).run(Spy(LdpcAlice(x, filler_rng=np.random.default_rng(1))))
    assert "construction" not in sent[0].fields
    res2 = reconcile_ldpc(x, y, q, seed=1, construction=1)
    assert res2.success and np.array_equal(res2.corrected, x)


def test_construction_bad_input_is_refused():
    with pytest.raises(ReconciliationInputError, match="construction"):
        build_code(16384, 0.9, 0, 0, construction=1)
    with pytest.raises(ReconciliationInputError, match="construction"):
        build_code(65536, 0.9, 0, 256, construction=4)
    with pytest.raises(ReconciliationInputError, match="construction"):
        plan_ldpc(0.02, decoder="bp", construction=1)
    alice = LdpcAlice(np.zeros(1000, np.uint8))
    with pytest.raises(MessageError, match="construction"):
        alice.handle(Message("ldpc/init", {"N": 1000, "code_n": 65536, "rate": 0.9, "code_seed": 0, "z": 256, "d": 0,
                                           "max_reveal": 10, "construction": 4}))


def test_construction_1_takes_the_rate_085_table_above_0875_and_no_rate_margin():
    from labqfl.qkd.ldpc import _degree_counts, mother_rate

    code = build_code(65536, 0.9, 0, 256, construction=1)
    degs = set(np.bincount(code.base_col).tolist())
    assert {4, 6, 7, 21} <= degs  # rate-0.85 table degrees (the rate-0.9 table has 2, 3, 5, 9, 12, 21)
    assert set(_degree_counts(256, 0.85)) - {2} <= degs | {3}
    assert mother_rate(0.9030, 1) == 0.9 and mother_rate(0.9107, 1) == 0.91 and mother_rate(0.99, 1) == 0.91
    assert mother_rate(0.8956, 1) == 0.89 and mother_rate(0.837, 1) == 0.84  # nearest at and below 0.88
    assert mother_rate(0.9030) == 0.87  # construction 0 keeps its margin


def test_construction_1_decodes_low_qber_frames_at_the_rate_it_picks():
    """QBER 0.6 %: construction 1 takes mother rate 0.91 (at most the wanted 0.936) and decodes every frame;
    construction 0 at the same rate had f 1.43 at 0.5 % (docs/reconciliation.md, session 41)."""
    q = 0.006
    plan = plan_ldpc(q, construction=1)
    assert plan.rate == 0.91
    rng = np.random.default_rng(61)
    x = rng.integers(0, 2, 6 * plan.key_bits_per_frame, dtype=np.uint8)
    y = x.copy()
    y[rng.choice(x.size, int(round(q * x.size)), replace=False)] ^= 1
    res = reconcile_ldpc(x, y, q, seed=2, construction=1)
    assert res.success and np.array_equal(res.corrected, x)
    assert res.efficiency < 1.36


def test_construction_0_settles_on_a_degree_2_codeword_silently_and_construction_1_does_not():
    """Replay of a frame measured in session 41 (`labqfl.bench.noisy_frame(48·kpf, 0.008, 380)`, frame 41, filler
    row 41 of ``default_rng(300)``): with construction 0 (mother rate 0.88) Bob's word matches every syndrome
    bit yet differs from Alice's by a weight-7 codeword of degree-2 variables — ``success`` with wrong key
    bits, caught only by verification.  Construction 1 (mother rate 0.90, no such codewords) decodes it."""
    from labqfl.bench import noisy_frame

    q, f = 0.008, 41
    plan = plan_ldpc(q, construction=0, decoder="amin")  # as measured (amin, the default decoder before)
    kpf = plan.key_bits_per_frame
    x, y = noisy_frame(48 * kpf, q, 380)
    xf, yf = x[f * kpf:(f + 1) * kpf], y[f * kpf:(f + 1) * kpf]
    filler = np.random.default_rng(300).integers(0, 2, (48, plan.d), dtype=np.uint8)[f]

    class Row:  # the block's filler generator, as seen by this one frame
        def integers(self, lo, hi, shape, dtype):
            return filler.reshape(shape)

    res = LdpcBob(yf, q, plan=plan).run(LocalChannel(LdpcAlice(xf, filler_rng=Row())))  # type: ignore[arg-type]
    assert res.success and res.frame_errors == 0  # every syndrome matched ...
    wrong = np.flatnonzero(res.corrected != xf)
    assert 0 < wrong.size <= 7  # ... with wrong key bits: Alice's word XOR a low-weight codeword
    code = build_code(plan.code_n, plan.rate, plan.code_seed, plan.z)
    keypos = np.flatnonzero(~np.isin(np.arange(code.n), code.untainted[:plan.d]))
    assert (np.diff(code.var_ptr)[keypos[wrong]] == 2).all()
    res1 = reconcile_ldpc(xf, yf, q, seed=3, construction=1)
    assert res1.success and np.array_equal(res1.corrected, xf)


def test_the_default_plan_decodes_the_replayed_frame_construction_0_got_wrong():
    """The frame of the test above, Bob with the default plan as the pipeline's Bob takes it (``plan_ldpc(q)``:
    construction 2 since session 41, mother rate 0.91) and Alice's filler drawn as in that replay (row 41 of
    ``default_rng(300)``'s (48, d) draw — the replay's exact filler when the plan is construction 0's, as before
    session 41, where this test fails): decoded to Alice's bits."""
    from labqfl.bench import noisy_frame
    from labqfl.qkd.ldpc import DEFAULT_CONSTRUCTION

    q, f = 0.008, 41
    kpf = plan_ldpc(q, construction=0).key_bits_per_frame
    x, y = noisy_frame(48 * kpf, q, 380)
    xf, yf = x[f * kpf:(f + 1) * kpf], y[f * kpf:(f + 1) * kpf]
    plan = plan_ldpc(q)
    assert DEFAULT_CONSTRUCTION == 3 and plan.construction == 3 and plan.rate == 0.91
    filler = np.random.default_rng(300).integers(0, 2, (48, plan.d), dtype=np.uint8)[f]

    class Row:  # the block's filler generator, as seen by this one frame
        def integers(self, lo, hi, shape, dtype):
            return np.resize(filler, shape).astype(dtype)

    res = LdpcBob(yf, q).run(LocalChannel(LdpcAlice(xf, filler_rng=Row())))  # type: ignore[arg-type]
    assert res.success and np.array_equal(res.corrected, xf)
    res2 = reconcile_ldpc(xf, yf, q, seed=3)
    assert res2.success and np.array_equal(res2.corrected, xf)


def _no_4_cycles(code) -> bool:
    """Fossorier's condition on the base graph: no rows r1, r2 and columns c1, c2 with
    s(r1,c1) − s(r1,c2) + s(r2,c2) − s(r2,c1) ≡ 0 mod z."""
    mb, nb, z = code.m // code.z, code.n // code.z, code.z
    S = np.full((mb, nb), -1, np.int64)
    rows = np.repeat(np.arange(mb), np.diff(code.base_ptr))
    S[rows, code.base_col] = code.base_shift
    for r1 in range(mb):
        for r2 in range(r1 + 1, mb):
            cs = np.flatnonzero((S[r1] >= 0) & (S[r2] >= 0))
            d = (S[r1, cs] - S[r2, cs]) % z
            if np.unique(d).size < d.size:
                return False
    return True


def test_construction_2_lengthens_the_degree_2_cycles_below_0875():
    """Construction 2: construction 1 above rate 0.875 (the same arrays); at and below it construction 0's base
    graph with the shifts of the degree-2 columns that close base cycles re-picked — at rate 0.82 the shortest
    cycle of lifted degree-2 variables (a codeword) goes from 7 to 14, still without 4-cycles; where the degree-2
    columns close no base cycle (0.62, 0.72, 0.84: QBER 6, 4, 2 %) the same code as construction 0."""
    c2 = build_code(65536, 0.82, 0, 256, construction=2)
    c0 = build_code(65536, 0.82, 0, 256)
    assert c2.construction == 2 and (c2.m, c2.n) == (c0.m, c0.n)
    assert np.array_equal(c2.base_col, c0.base_col) and not np.array_equal(c2.base_shift, c0.base_shift)
    assert _deg2_cycle(c0).size <= 12  # (the shortest has 7, session 41's search from every check)
    cyc = _deg2_cycle(c2)
    assert cyc is not None and cyc.size >= 14  # every cycle: the shortest has 14 (same search)
    word = np.zeros(c2.n, np.uint8)
    word[cyc] = 1
    assert not c2.syndrome(word).any()
    assert _no_4_cycles(c2) and _no_4_cycles(c0)
    a, b = build_code(65536, 0.9, 0, 256, construction=1), build_code(65536, 0.9, 0, 256, construction=2)
    assert np.array_equal(a.check_var, b.check_var) and np.array_equal(a.untainted, b.untainted)
    for rate in (0.62, 0.72, 0.84):  # no base cycle of degree-2 columns there: the same code
        a, b = build_code(65536, rate, 0, 256), build_code(65536, rate, 0, 256, construction=2)
        assert np.array_equal(a.check_var, b.check_var) and np.array_equal(a.base_shift, b.base_shift)
    plan = plan_ldpc(0.0225, construction=2)
    assert plan.rate == 0.82 and plan.construction == 2
    rng = np.random.default_rng(9)
    x = rng.integers(0, 2, 2 * plan.key_bits_per_frame, dtype=np.uint8)
    y = x.copy()
    y[rng.choice(x.size, int(round(0.0225 * x.size)), replace=False)] ^= 1
    res = reconcile_ldpc(x, y, 0.0225, seed=4, construction=2)
    assert res.success and np.array_equal(res.corrected, x)


def test_deg2_long_cycles_on_the_default_rate_080_base_graph():
    """qc_deg2_long_cycles on construction 0's rate-0.80 base graph (lifted degree-2 girth 8): every cycle it
    closes is longer than 8 (≥ 14), and only second edges of degree-2 columns move."""
    from labqfl.qkd.ldpc_qc import qc_deg2_long_cycles

    code = build_code(65536, 0.8, 0, 256)
    mb, z = code.m // code.z, code.z
    rows = np.repeat(np.arange(mb), np.diff(code.base_ptr)).astype(np.int64)
    draws = np.zeros(rows.size, np.int64)
    new, worst = qc_deg2_long_cycles(mb, code.n // z, z, code.base_col.copy(), rows, code.base_shift.copy(), draws)
    assert 14 <= worst < 1 << 29 and new.shape == code.base_shift.shape
    deg = np.bincount(code.base_col)
    moved = np.flatnonzero(new != code.base_shift)
    assert moved.size and (deg[code.base_col[moved]] == 2).all()


@pytest.mark.parametrize(("rate", "k"), [(0.88, 4), (0.89, 4), (0.9, 8), (0.91, 8), (0.92, 12), (0.93, 16), (0.94, 16)])
def test_construction_3_is_construction_2_made_heavier_above_0875(rate, k):
    """Construction 3 (the default since session 43) above mother rate 0.875: construction 2's rate-0.85 table
    with 25 degree-2 base columns (at most m_b − 1, still a forest) and k degree-3 columns moved to each of
    degrees 21 (at most m_b: every row at rate 0.94) and 6 (``ldpc._C3_HEAVIER``); no 4-cycle."""
    c2, c3 = build_code(65536, rate, 0, 256, construction=2), build_code(65536, rate, 0, 256, construction=3)
    assert c3.construction == 3 and (c3.m, c3.n) == (c2.m, c2.n)
    mb = c3.m // c3.z
    top = min(21, mb)
    h2 = np.bincount(np.bincount(c2.base_col, minlength=256), minlength=22)
    h3 = np.bincount(np.bincount(c3.base_col, minlength=256), minlength=22)
    assert h3[2] == min(25, mb - 1) and h3[top] - h2[top] == k and h3[6] - h2[6] == k
    assert h3[3] == h2[3] + (h2[2] - h3[2]) - 2 * k
    assert all(h3[d] == h2[d] for d in (4, 5, 7, 9))
    assert _forest(c3) and c3.forced_4cycles == 0 and _no_4_cycles(c3)


def test_construction_3_is_construction_2_at_and_below_0875():
    """At and below rate 0.875 (QBER above ≈ 1.35 %) construction 3 is construction 2's code — the same object, so
    ``ldpc/init`` says construction 2 and a block there is what it was before session 43."""
    for rate in (0.54, 0.82, 0.87):
        c3 = build_code(65536, rate, 0, 256, construction=3)
        assert c3 is build_code(65536, rate, 0, 256, construction=2) and c3.construction == 2
    plan = plan_ldpc(0.02)
    assert plan.construction == 3 and plan.rate == 0.83
    assert build_code(plan.code_n, plan.rate, plan.code_seed, plan.z, plan.construction).construction == 2


@pytest.mark.parametrize(("q", "seed", "frames", "rates", "f2_above", "f3_below"),
                         [(0.006, 710, 24, (0.91, 0.91), 1.25, 1.23), (0.003, 790, 16, (0.91, 0.94), 1.7, 1.3)])
def test_construction_3_leaks_less_at_low_qber(q, seed, frames, rates, f2_above, f3_below):
    """QBER 0.6 % (the default station runs at 0.5–0.86 %), 24 frames: construction 2's rate-0.91 code needs f 1.2739
    (108 sweeps per frame), construction 3's 1.2063 (58).  QBER 0.3 %, 16
    frames: construction 2 (at most rate 0.91, every frame decoded at the first attempt) 1.7808, construction 3 (rate
    0.94) 1.2574.  Both decode every frame to Alice's bits (session 43, docs/reconciliation.md)."""
    from labqfl.bench import noisy_frame

    f = {}
    for c, rate in zip((2, 3), rates, strict=True):
        plan = plan_ldpc(q, construction=c)
        assert plan.rate == rate
        x, y = noisy_frame(frames * plan.key_bits_per_frame, q, seed)
        res = LdpcBob(y, q, plan=plan).run(LocalChannel(LdpcAlice(x, filler_rng=np.random.default_rng(seed))))
        assert res.frame_errors == 0
        np.testing.assert_array_equal(res.corrected, x)
        f[c] = res.efficiency
    assert f[3] < f3_below < f2_above < f[2], f


def test_construction_3_takes_mother_rates_up_to_0_94_below_0_65_percent():
    """``ldpc._C3_HIGHEST``: rate 0.94 below QBER 0.35 %, 0.93 below 0.45 %, 0.92 below 0.55 %, then at most 0.91 as
    constructions 1 and 2 (whose rate-0.92–0.94 codes left most frames undecoded); an explicit f_mother may take any."""
    from labqfl.qkd.finite_key import binary_entropy

    qs = (0.002, 0.0034, 0.0035, 0.0044, 0.0045, 0.0054, 0.0055, 0.009)
    assert [plan_ldpc(q).rate for q in qs] == [0.94, 0.94, 0.93, 0.93, 0.92, 0.92, 0.91, 0.91]
    assert {plan_ldpc(q, construction=c).rate for q in qs for c in (1, 2)} == {0.91}
    assert plan_ldpc(0.006, f_mother=0.07 / binary_entropy(0.006)).rate == 0.93
    assert plan_ldpc(0.006, f_mother=0.07 / binary_entropy(0.006), construction=2).rate == 0.91
