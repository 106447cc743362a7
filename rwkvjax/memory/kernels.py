"""The session memory's compiled loops (numba): binary context mixing of the language model with a memory.

A symbol of `nbits` bits (8 for bytes, 16 for World ids) is coded as a path through a binary tree; every tree
node gets one probability that its bit is 1, so any choice of node probabilities is an exact distribution over
the 2^nbits leaves (ids >= V get probability 0 exactly). The node probability mixes, in the stretch domain
st(p) = ln(p / (1 - p)) (PAQ's logistic mixing; Mahoney, "Data Compression Explained", mattmahoney.net/dc/dce.html):

- the language model: st of the share of its probability under the node's 1-child (`lm_st`, from
  `rwkvjax.memory.lm` on device, or from a heap of subtree sums here when a whole distribution is wanted);
- order-k context models: one adaptive 16-bit counter per (hashed k-symbol context, node), kept in 32-byte
  buckets, one per nibble of the symbol (word 0 checks the hash; words 1..15 are the nibble's tree of nodes),
  two buckets of a pair in one cache line;
- a word model (bytes only): the current word, and it with the previous word;
- two match models: the symbol that followed the latest earlier occurrence of the last `minlen` symbols,
  confidence learned per (match length, bit position, expected bit); after one miss a match is followed once
  more ("recovering"), since copies with one symbol changed are common;
- two weight sets chosen by small contexts (the partial symbol; the model's surprise at the previous symbol x
  the highest context order seen x match state x bit) and a final mixer of the two per bit position;
- an SSE map (secondary estimation) refining the mixed probability by node and previous symbol.

Choices measured on the nine sample sessions (held-out bits/byte, alone / primed with every earlier session):
`benchmarks/memory_mix.py`, figures in benchmarks/RESULTS.md ("Session memory").

Every weight set, counter and map entry a symbol touches is selected by its bit position or its node, so no
two bits of one symbol share one: predicting all bits from the state at the symbol's start and then updating
is the same as updating after each bit. Prediction never writes; `score` predicts a symbol's bits, takes its
code length, and only then updates (prequential: test, then train).

State lives in flat numpy arrays (saved and restored exactly); settings are the int64 array `P` and the
float64 array `F` (layouts below, filled by `rwkvjax.memory.memory`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# ----- P: int64 settings -----
P_NBITS, P_V, P_HBITS, P_TBITS, P_NCTX, P_WORD, P_M1MIN, P_M2MIN, P_MBITS, P_LIMIT, P_SMLIMIT, P_SELECT, P_SSE = range(13)
# P_SELECT 0: one weight set per bit position (the mixers' contexts off); P_SSE 0: no SSE map (both for ablations)
P_ORDERS = 13          # P[P_ORDERS + j]: the order of context j (word contexts: -1 and -2)
MAX_CTX = 12
P_LEN = P_ORDERS + MAX_CTX
# ----- F: float64 settings -----
F_LR, F_LR_FINAL, F_BIAS = range(3)
F_LEN = 3
# ----- R: int64 registers (the scalar state) -----
R_POS, R_M1PTR, R_M1LEN, R_M2PTR, R_M2LEN, R_W0, R_W1, R_SURP, R_LEARNED, R_MH1, R_MH2, R_TOUCH = range(12)
R_LEN = 12  # R_TOUCH: a sink for the prefetching loads (no meaning)

N_SURP = 8             # buckets of the model's surprise at the previous symbol (0: not known)
N_LENB = 16            # match-length buckets (0 = no match)
VERIFY = 64            # symbols compared backwards when a match is taken up
ST_CLIP = 20.0         # |stretch| of the language model's input and of the mixers' outputs
APM_RATE = 0.02       # how fast an SSE entry moves to what followed (16-bit probabilities)
APM_WEIGHT = 0.6      # the SSE map's share of the final probability (measured: 0.5-0.75 within 0.1%)
SQ_STEP = 64           # squash table: 64 entries per unit of stretch over [-ST_CLIP, ST_CLIP]
NEUTRAL = np.uint32(1 << 31)  # a match-map counter at p = 1/2 with count 0 (22-bit p << 10 | 10-bit count)
# A context counter at p = 1/2 with count 0 (12-bit p << 4 | 4-bit count). Measured on the sample sessions: 16-bit
# counters with counts capped at 15 beat 32-bit ones capped at 255 even at equal bucket count (they adapt faster),
# and at equal memory they hold twice the contexts (held-out 0.964 vs 0.972 bpb alone, 0.689 vs 0.700 primed).
NEUTRAL16 = np.uint16(1 << 15)

_K1 = np.uint64(0xBF58476D1CE4E5B9)  # splitmix64's finaliser constants (Steele, Lea, Flood, OOPSLA 2014)
_K2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
_ROLL = np.uint64(0x100000001B3)    # the FNV-1 64-bit prime, as the base of the match models' rolling hash


def n_inputs(nctx: int) -> int:
    """Mixer inputs: bias, the language model, one per context, two match models."""
    return 4 + nctx


def n_sets(nbits: int, nctx: int) -> tuple[int, int]:
    """Weight sets of the two mixers: the partial symbol (bytes; the nibble's node and the nibble's place for
    wider ids); surprise x highest order seen x match state (none, < 16, longer) x bit."""
    return (1 << nbits) if nbits <= 8 else 16 * (nbits // 4), N_SURP * (nctx + 1) * 3 * nbits


def stretch_table() -> np.ndarray:
    p = (np.arange(4096) + 0.5) / 4096
    return np.log(p / (1 - p))


def squash_table() -> np.ndarray:
    x = np.arange(-ST_CLIP * SQ_STEP, ST_CLIP * SQ_STEP + 2) / SQ_STEP
    return 1.0 / (1.0 + np.exp(-x))


def rate_table() -> np.ndarray:
    """Counter learning rates 1 / (n + 1.5) after n observations, in 16-bit fixed point."""
    return np.round(65536.0 / (np.arange(1024) + 1.5)).astype(np.int64)


@njit(cache=True, inline="always")
def _mix(x):
    x ^= x >> np.uint64(30)
    x *= _K1
    x ^= x >> np.uint64(27)
    x *= _K2
    x ^= x >> np.uint64(31)
    return x


@njit(cache=True, inline="always")
def _len_bucket(n):
    if n <= 0:
        return 0
    if n < 12:
        return n
    if n < 16:
        return 12
    if n < 32:
        return 13
    if n < 64:
        return 14
    return 15


@njit(cache=True, inline="always")
def _check(key):
    """A bucket's 16-bit check word (never 0, the mark of an empty bucket)."""
    return np.uint16((key & np.uint64(0xFFFF)) | np.uint64(1))


@njit(cache=True, inline="always")
def _surprise_bucket(bits):
    if bits < 0.0:
        return 0
    if bits < 0.5:
        return 1
    if bits < 1.5:
        return 2
    if bits < 3.0:
        return 3
    if bits < 4.5:
        return 4
    if bits < 6.0:
        return 5
    if bits < 8.0:
        return 6
    return 7


@njit(cache=True, inline="always")
def _is_word(c):
    return (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122) or c == 95 or c >= 128


@njit(cache=True, inline="always")
def _sse_node(c0, k, nb):
    """The SSE map's node of tree node c0 at bit k: c0 itself for bytes; for wider ids the node within its nibble
    (a leading 1 and the nibble's bits known so far) in the nibble's place."""
    if nb <= 8:
        return c0
    kk = k & 3
    return (k >> 2) * 16 + ((np.int64(1) << kk) | (c0 & ((np.int64(1) << kk) - 1)))


SCORE, DIST, ABSORB = 0, 1, 2


@njit(cache=True, inline="always")
def _power(x, n):
    """x^n modulo 2^64 by squaring."""
    out = np.uint64(1)
    while n > 0:
        if n & 1:
            out *= x
        x *= x
        n >>= 1
    return out


# One function, no helper that takes an array: numba adds a reference-count update per array argument of an
# inlined call that its pruning pass often cannot remove, and those atomic updates cost 4x the mixing itself
# (measured: 140 ns per node with helpers, 35 ns without).
@njit(cache=True, error_model="numpy")
def kernel(mode, P, F, R, hist, hashes, table, mt, sm, W, wf, apm, rates, ST, SQ, lm_st, lm_bits, probs_V, syms,
           learn, out):
    """SCORE: out[t] = code length in bits of syms[t] under the mixture, predicted from the state before it, then
    learned (tables always, the mixers when `learn`); lm_st [T, nbits] is the language model's stretch at each
    node of the symbol's path, lm_bits [T] its code length of the symbol (the surprise context; < 0: unknown).
    DIST: out[:V] = the mixture's probability of every id given the language model's probs_V; nothing is
    written to the state.
    ABSORB: learn syms into the history, tables and match maps without a language model (mixers untouched)."""
    nb = P[P_NBITS]
    nctx = P[P_NCTX]
    V = P[P_V]
    nn = nb // 4
    nin = 4 + nctx
    top = np.int64(1) << nb
    tmask = (np.int64(1) << P[P_TBITS]) - 1
    H = np.int64(1) << P[P_HBITS]
    hmask = H - 1
    limit = P[P_LIMIT]
    smlimit = P[P_SMLIMIT]
    select = P[P_SELECT] != 0
    sse_w = APM_WEIGHT if P[P_SSE] else 0.0
    bias = F[F_BIAS]
    mshift = np.uint64(64 - P[P_MBITS])
    n1 = (np.int64(1) << nb) if nb <= 8 else 16 * nn  # weight sets of the first mixer
    roll1 = _power(_ROLL, P[P_M1MIN])  # ROLL^minlen: the weight of the symbol leaving a match model's window
    roll2 = _power(_ROLL, P[P_M2MIN])
    keys = np.zeros((nn, nctx), np.uint64)
    slots_all = np.zeros((nn, nctx), np.int64)
    X = np.zeros((nb, nin), np.float64)
    S = np.zeros((nb, 4), np.float64)
    SETS = np.zeros((nb, 4), np.int64)
    if mode == DIST:
        tree = np.zeros(2 * top, np.float64)
        mass = np.zeros(2 * top, np.float64)
        for i in range(top):
            tree[top + i] = probs_V[i] if i < V else 0.0
        for i in range(top - 1, 0, -1):
            tree[i] = tree[2 * i] + tree[2 * i + 1]
        mass[1] = 1.0
        T = 1
    else:
        tree = np.zeros(1, np.float64)
        mass = np.zeros(1, np.float64)
        T = syms.shape[0]
    for t in range(T):
        sym = np.int64(syms[t]) if mode != DIST else np.int64(0)
        l1 = R[R_M1LEN]
        l2 = R[R_M2LEN]
        e1 = np.int64(hist[R[R_M1PTR] & hmask]) if l1 != 0 else np.int64(-1)
        e2 = np.int64(hist[R[R_M2PTR] & hmask]) if l2 != 0 else np.int64(-1)
        prob = 1.0  # of the symbol: the product of its path's bit probabilities (one logarithm per symbol)
        # ---------- predict: every node of the path (SCORE), of the tree (DIST); buckets only (ABSORB) ----------
        if mode != DIST:
            # The path is known, so every bucket it needs is touched first by loads that no branch waits on:
            # their cache misses overlap instead of each one stalling the lookups behind it (measured: x1.4).
            touch = np.uint16(0)
            for nib in range(nn):
                salt = np.uint64(nib + 1) * _GOLD + np.uint64(sym >> (nb - 4 * nib)) * _K2
                for j in range(nctx):
                    key = _mix(hashes[j] ^ salt)
                    keys[nib, j] = key
                    i = np.int64((key >> np.uint64(32)) & np.uint64(tmask)) & ~np.int64(1)
                    touch ^= table[i * 16] ^ table[i * 16 + 16]
            if sse_w > 0.0 and mode == SCORE:  # and the SSE entries of the path's nodes, both ends of each (x1.03)
                prev = (np.int64(hist[(R[R_POS] - 1) & hmask]) & 255) * n1
                for k in range(nb):
                    c0 = (sym >> (nb - k)) | (np.int64(1) << k)
                    node = _sse_node(c0, k, nb)
                    ia = (prev + node) * 33
                    touch ^= apm[ia] ^ apm[ia + 32]
            R[R_TOUCH] = touch
        for nib in range(nn):
            k0 = 4 * nib
            if mode == DIST:
                p_lo = np.int64(0)
                p_hi = np.int64(1) << k0
            else:
                p_lo = sym >> (nb - k0)
                p_hi = p_lo + 1
            for prefix in range(p_lo, p_hi):
                root = (np.int64(1) << k0) | prefix
                if mode == DIST:
                    if mass[root] <= 0.0:
                        continue
                    salt = np.uint64(nib + 1) * _GOLD + np.uint64(prefix) * _K2
                    for j in range(nctx):
                        keys[nib, j] = _mix(hashes[j] ^ salt)
                # the buckets of this nibble (-1: an unseen context), and the highest order among them
                hi = 0
                for j in range(nctx):
                    key = keys[nib, j]
                    chk = _check(key)
                    i = np.int64((key >> np.uint64(32)) & np.uint64(tmask)) & ~np.int64(1)
                    sl = i if table[i * 16] == chk else (i + 1 if table[(i + 1) * 16] == chk else -1)
                    slots_all[nib, j] = sl
                    if sl >= 0 and P[P_ORDERS + j] >= 0:
                        hi = j + 1
                if mode == ABSORB:
                    continue
                for kk in range(4):
                    k = k0 + kk
                    if mode == DIST:
                        l_lo = np.int64(0)
                        l_hi = np.int64(1) << kk
                    else:
                        l_lo = (sym >> (nb - k)) & ((np.int64(1) << kk) - 1)
                        l_hi = l_lo + 1
                    for low in range(l_lo, l_hi):
                        c0 = (root << kk) | low
                        m = 1.0
                        if mode == DIST:
                            m = mass[c0]
                            if m <= 0.0:
                                mass[2 * c0] = 0.0
                                mass[2 * c0 + 1] = 0.0
                                continue
                        first1 = ((c0 << (nb - k)) - top) + (np.int64(1) << (nb - k - 1))
                        if first1 >= V:  # no valid id under the 1-child: bit 0 is certain
                            p1 = 0.0
                            SETS[k, 0] = -1
                        else:
                            if mode == DIST:
                                t0 = tree[2 * c0]
                                t1 = tree[2 * c0 + 1]
                                st = ST_CLIP if t0 <= 0.0 else (-ST_CLIP if t1 <= 0.0 else math.log(t1) - math.log(t0))
                            else:
                                st = lm_st[t, k]
                            X[k, 0] = bias
                            X[k, 1] = min(max(st, -ST_CLIP), ST_CLIP)
                            ni = (np.int64(1) << kk) | low  # the node within its nibble
                            for j in range(nctx):
                                sl = slots_all[nib, j]
                                X[k, 2 + j] = ST[table[sl * 16 + ni] >> np.uint16(4)] if sl >= 0 else 0.0
                            # a match model speaks while its expected symbol agrees with the bits known so far
                            known = c0 ^ (np.int64(1) << k)
                            mlen = np.int64(0)
                            X[k, nctx + 2] = 0.0
                            X[k, nctx + 3] = 0.0
                            if l1 != 0 and (e1 >> (nb - k)) == known:
                                X[k, nctx + 2] = ST[sm[(_len_bucket(l1) * nb + k) * 2 + ((e1 >> (nb - k - 1)) & 1)]
                                                    >> np.uint32(20)]
                                mlen = l1
                            if l2 != 0 and (e2 >> (nb - k)) == known:
                                X[k, nctx + 3] = ST[sm[((N_LENB + _len_bucket(l2)) * nb + k) * 2
                                                       + ((e2 >> (nb - k - 1)) & 1)] >> np.uint32(20)]
                                mlen = max(mlen, l2)
                            mstate = 0 if mlen == 0 else (1 if mlen < 16 else 2)
                            if select:
                                sa = c0 if nb <= 8 else (k >> 2) * 16 + ni
                                sb = n1 + (((R[R_SURP] * (nctx + 1) + hi) * 3 + mstate) * nb + k)
                            else:
                                sa = k
                                sb = n1 + k
                            SETS[k, 0] = sa
                            SETS[k, 1] = sb
                            da = 0.0
                            db = 0.0
                            for i in range(nin):
                                xv = X[k, i]
                                da += W[sa, i] * xv
                                db += W[sb, i] * xv
                            da = min(max(da, -ST_CLIP), ST_CLIP)
                            db = min(max(db, -ST_CLIP), ST_CLIP)
                            df = wf[k, 0] * da + wf[k, 1] * db + wf[k, 2] * bias
                            df = min(max(df, -ST_CLIP), ST_CLIP)
                            S[k, 0] = da
                            S[k, 1] = db
                            S[k, 2] = df
                            # squash by table, as the mixers learn (an exp per node cost a twentieth of the time)
                            u = (df + ST_CLIP) * SQ_STEP
                            iu = int(u)
                            fu = u - iu
                            pm = SQ[iu] * (1.0 - fu) + SQ[iu + 1] * fu
                            # secondary estimation (SSE): p refined by what followed this (node, previous symbol, p)
                            # before; measured on the sample sessions: -0.8% bits alone, -1.4% primed (a second map by
                            # surprise and match state beside it did not help)
                            u = (min(max(df, -7.999), 7.999) + 8.0) * 2.0
                            ju = int(u)
                            fu = u - ju
                            node = _sse_node(c0, k, nb)
                            # laid out by previous symbol first: the 8 nodes of one symbol's path lie close together
                            ia = ((np.int64(hist[(R[R_POS] - 1) & hmask]) & 255) * n1 + node) * 33 + ju
                            SETS[k, 2] = ia
                            S[k, 3] = fu
                            pa = (apm[ia] * (1.0 - fu) + apm[ia + 1] * fu) * (1.0 / 65536.0)
                            p1 = (1.0 - sse_w) * pm + sse_w * pa
                            p1 = min(max(p1, 1e-9), 1.0 - 1e-9)
                        if mode == DIST:
                            mass[2 * c0] = m * (1.0 - p1)
                            mass[2 * c0 + 1] = m * p1
                        else:
                            prob *= p1 if (sym >> (nb - 1 - k)) & 1 else 1.0 - p1
        if mode == DIST:
            for i in range(V):
                out[i] = mass[top + i]
            return out
        if mode == SCORE:
            out[t] = -math.log2(prob)
        # ---------- learn (after the symbol was scored) ----------
        if mode == SCORE and learn:
            lr = F[F_LR]  # constant: a decaying rate measured within 0.2% (benchmarks/RESULTS.md)
            for k in range(nb):
                if SETS[k, 0] < 0:
                    continue
                y = (sym >> (nb - 1 - k)) & 1
                ea = 0.0
                eb_ = 0.0
                ef = 0.0
                for q in range(3):  # each mixer learns from the error of its own output (squash by table)
                    u = (S[k, q] + ST_CLIP) * SQ_STEP
                    iu = int(u)
                    fu = u - iu
                    err = y - (SQ[iu] * (1.0 - fu) + SQ[iu + 1] * fu)
                    if q == 0:
                        ea = err * lr
                    elif q == 1:
                        eb_ = err * lr
                    else:
                        ef = err * F[F_LR_FINAL]
                sa = SETS[k, 0]
                sb = SETS[k, 1]
                for i in range(nin):
                    xv = X[k, i]
                    W[sa, i] += ea * xv
                    W[sb, i] += eb_ * xv
                wf[k, 0] += ef * S[k, 0]
                wf[k, 1] += ef * S[k, 1]
                wf[k, 2] += ef * bias
                fu = S[k, 3]
                for q in range(2, 3 if sse_w > 0.0 else 2):
                    ia = SETS[k, q]
                    target = 65535.0 if y else 0.0
                    apm[ia] = np.uint16(apm[ia] + int((target - apm[ia]) * (APM_RATE * (1.0 - fu))))
                    apm[ia + 1] = np.uint16(apm[ia + 1] + int((target - apm[ia + 1]) * (APM_RATE * fu)))
            R[R_LEARNED] += 1
        # context counters along the path (a bucket absent, or lost since it was looked up, is taken over)
        for nib in range(nn):
            for j in range(nctx):
                key = keys[nib, j]
                chk = _check(key)
                sl = slots_all[nib, j]
                if sl < 0 or table[sl * 16] != chk:
                    i = np.int64((key >> np.uint64(32)) & np.uint64(tmask)) & ~np.int64(1)
                    if table[i * 16] == chk:
                        sl = i
                    elif table[(i + 1) * 16] == chk:
                        sl = i + 1
                    else:  # replace the one of the pair whose root counter has seen less
                        sl = i if (table[i * 16 + 1] & np.uint16(15)) <= (table[(i + 1) * 16 + 1]
                                                                          & np.uint16(15)) else i + 1
                        table[sl * 16] = chk
                        for n in range(1, 16):
                            table[sl * 16 + n] = NEUTRAL16
                ni = np.int64(1)
                for kk in range(4):
                    y = (sym >> (nb - 1 - 4 * nib - kk)) & 1
                    idx = sl * 16 + ni
                    v = np.int64(table[idx])
                    n = v & 15
                    p = v >> 4
                    # A context that turns (the bit goes against its side) keeps only one count, so stale
                    # statistics give way fast: measured on the sample sessions, held-out 0.937 vs 0.948 bpb alone,
                    # 0.657 vs 0.666 primed, and the canaries read with a memory full of sessions +0.8% over an
                    # empty memory instead of +2.9% (benchmarks/RESULTS.md, "Session memory"). Written without
                    # branches: which way a bit goes is not predictable, and a mispredicted branch per counter
                    # cost a tenth of the time.
                    turn = np.int64((p < 2048) == (y == 1)) & np.int64(n > 1)
                    n += turn * (1 - n)
                    p += (y * 4095 - p) * rates[n] >> 16
                    table[idx] = np.uint16((p << 4) | (n + np.int64(n < limit)))
                    ni = 2 * ni + y
        # match maps: was the expected bit right, per (length, bit)?
        for mm in range(2):
            ln = l1 if mm == 0 else l2
            if ln == 0:
                continue
            e = e1 if mm == 0 else e2
            lb = _len_bucket(ln)
            for k in range(nb):
                eb = (e >> (nb - 1 - k)) & 1
                y = (sym >> (nb - 1 - k)) & 1
                idx = ((mm * N_LENB + lb) * nb + k) * 2 + eb
                v = np.int64(sm[idx])
                n = v & 1023
                p = v >> 10
                p += ((((1 << 22) - 1 if y else 0) - p) * rates[n]) >> 16
                sm[idx] = np.uint32((p << 10) | (n + 1 if n < smlimit else n))
                if eb != y:
                    break  # below a wrong bit the match model has no opinion
        # ---------- the symbol joins the history ----------
        pos = R[R_POS]
        hist[pos & hmask] = sym
        pos += 1
        R[R_POS] = pos
        lo = max(np.int64(0), pos - H)
        for mm in range(2):
            minlen = P[P_M1MIN + mm]
            ptr = R[R_M1PTR + 2 * mm]
            ln = R[R_M1LEN + 2 * mm]
            if ln != 0:
                if np.int64(hist[ptr & hmask]) == sym and ptr + 1 < pos:
                    ln = ln + 1 if ln > 0 else 1
                    ptr += 1
                elif ln > 0:
                    # one miss: follow the same alignment once more (length -1, "recovering"), since a copy with
                    # one symbol changed (a renamed identifier, an edited number) goes on where it was
                    ln = -1
                    ptr += 1
                else:
                    ln = 0
            # rolling hash of the last `minlen` symbols, h = sum (s + 1) * ROLL^age
            h = np.uint64(R[R_MH1 + mm]) * _ROLL + np.uint64(sym + 1)
            if pos > minlen:
                h -= (np.uint64(hist[(pos - 1 - minlen) & hmask]) + np.uint64(1)) * (roll1 if mm == 0 else roll2)
            R[R_MH1 + mm] = np.int64(h)
            if pos >= minlen:
                idx = np.int64(_mix(h + np.uint64(minlen)) >> mshift)
                if ln <= 0:  # no match, or recovering: a verified earlier occurrence of the context wins
                    cand = mt[mm, idx]
                    if lo < cand < pos:
                        n = 0
                        while n < VERIFY and cand - 1 - n >= lo and \
                                hist[(cand - 1 - n) & hmask] == hist[(pos - 1 - n) & hmask]:
                            n += 1
                        if n >= minlen:
                            ln = n
                            ptr = cand
                mt[mm, idx] = pos
            if ln != 0 and (ptr >= pos or ptr < lo):
                ln = 0
            R[R_M1PTR + 2 * mm] = ptr
            R[R_M1LEN + 2 * mm] = ln
        if P[P_WORD]:
            if _is_word(sym):
                c = sym + 32 if 65 <= sym <= 90 else sym  # case-folded
                R[R_W0] = np.int64(_mix(np.uint64(R[R_W0]) + np.uint64(c) + np.uint64(1)) >> np.uint64(1))
            elif R[R_W0] != 0:
                R[R_W1] = R[R_W0]
                R[R_W0] = 0
        R[R_SURP] = _surprise_bucket(lm_bits[t] if mode == SCORE else -1.0)
        h = np.uint64(0)
        k_done = 0
        for j in range(nctx):
            order = P[P_ORDERS + j]
            if order >= 0:
                while k_done < order:
                    k_done += 1
                    s = np.int64(hist[(pos - k_done) & hmask]) if pos - k_done >= 0 else np.int64(0)
                    h = _mix(h + np.uint64(s) + np.uint64(k_done) * _GOLD)
                hashes[j] = _mix(h + np.uint64(order + 1) * _K1)
            elif order == -1:
                hashes[j] = _mix(np.uint64(R[R_W0]) + np.uint64(101) * _K1)
            else:
                hashes[j] = _mix(np.uint64(R[R_W0]) + _mix(np.uint64(R[R_W1]) + np.uint64(202)) * _K2)
    return out


@njit(cache=True)
def draft(P, R, hist, k, out):
    """Up to `k` symbols the longer current match predicts next (the history after the matched place)."""
    hmask = (np.int64(1) << P[P_HBITS]) - 1
    pos = R[R_POS]
    ln = R[R_M1LEN]
    ptr = R[R_M1PTR]
    if R[R_M2LEN] > ln:
        ln = R[R_M2LEN]
        ptr = R[R_M2PTR]
    n = 0
    if ln > 0:
        while n < k and ptr + n < pos:
            out[n] = hist[(ptr + n) & hmask]
            n += 1
    return n


@njit(cache=True)
def path_stretch_probs(probs, sym, nbits, st):
    """The model's opinion at each node of `sym`'s path from its probabilities [V] (what
    `rwkvjax.memory.memory.node_stretch_np` and, on device, `rwkvjax.memory.lm.path_stretch` compute), in one pass
    over the leaves under the path: st[k] = ln(mass under the node's 1-child / mass under its 0-child)."""
    V = probs.shape[0]
    for k in range(nbits):
        width = np.int64(1) << (nbits - k - 1)  # leaves under each child
        lo = (np.int64(sym) >> (nbits - k)) << (nbits - k)  # first leaf under the node
        zero = 0.0
        one = 0.0
        for i in range(lo, min(lo + width, V)):
            zero += probs[i]
        for i in range(lo + width, min(lo + 2 * width, V)):
            one += probs[i]
        if one <= 0.0 and zero <= 0.0:
            st[k] = 0.0
        elif one <= 0.0:
            st[k] = -ST_CLIP
        elif zero <= 0.0:
            st[k] = ST_CLIP
        else:
            st[k] = min(max(math.log(one) - math.log(zero), -ST_CLIP), ST_CLIP)
