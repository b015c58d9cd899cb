"""The static cost model reads loops out of SASS and weighs nested ones by their trips."""

from __future__ import annotations

import pytest

from kernels.costmodel import (
    H200,
    decode_bytes,
    dense_gemv_us,
    find_loops,
    k_step_cost,
    parse_sass,
    predict,
)

# The shape of a cuobjdump -sass listing: a K loop (0x0030-0x00c0) holding a tenant loop
# (0x0050-0x0090), with a barrier in the K loop and a shuffle in the tenant loop.
SASS = """
        Function : kernel
        /*0000*/                   MOV R1, c[0x0][0x28] ;                  /* 0x000 */
        /*0010*/                   S2R R0, SR_TID.X ;                      /* 0x000 */
        /*0020*/                   IMAD R2, R0, 0x4, RZ ;                  /* 0x000 */
        /*0030*/                   LDG.E.128 R4, [R2.64] ;                 /* 0x000 */
        /*0040*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;           /* 0x000 */
        /*0050*/                   SHF.L.U32 R8, R4, 0x1f, RZ ;            /* 0x000 */
        /*0060*/                   LOP3.LUT R9, R8, 0x80000000, R5, 0x78, !PT ; /* 0x000 */
        /*0070*/                   SHFL.BFLY PT, R10, R9, 0x1, 0x1f ;      /* 0x000 */
        /*0080*/                   FADD R11, R10, R11 ;                    /* 0x000 */
        /*0090*/              @!P0 BRA 0x50 ;                              /* 0x000 */
        /*00a0*/                   FFMA R12, R4, R5, R12 ;                 /* 0x000 */
        /*00b0*/                   ISETP.GE.AND P1, PT, R2, R3, PT ;       /* 0x000 */
        /*00c0*/               @P1 BRA 0x30 ;                              /* 0x000 */
        /*00d0*/                   STG.E [R2.64], R12 ;                    /* 0x000 */
        /*00e0*/                   EXIT ;                                  /* 0x000 */
        /*00f0*/                   BRA 0xf0;                               /* 0x000 */
"""


def test_parses_instructions_with_predicates_and_modifiers() -> None:
    code = parse_sass(SASS)
    assert len(code) == 16
    assert code[9].opcode == "BRA"
    assert code[9].address == 0x90
    assert code[3].base == "LDG"
    assert code[6].operands.startswith("R9, R8, 0x80000000")


def test_finds_nested_loops_and_ignores_the_trailing_self_branch() -> None:
    loops = find_loops(parse_sass(SASS))
    spans = sorted((lp.start, lp.end, lp.depth) for lp in loops)
    # The tenant loop (5..9) inside the K loop (3..12); `BRA 0xf0` branches to itself.
    assert spans == [(3, 12, 0), (5, 9, 1)]  # the end-of-kernel self-branch is no loop


def test_nested_loops_count_once_per_trip() -> None:
    code = parse_sass(SASS)
    once = k_step_cost(code)
    assert once.instructions == 10  # 10 instructions from 0x30 to 0xc0
    sixteen = k_step_cost(code, (1.0, 16.0))
    assert sixteen.instructions == 10 + 15 * 5  # the 5-instruction tenant loop, 16 times
    assert sixteen.barriers == 1
    assert sixteen.shuffles == 16


def test_prediction_is_the_larger_floor() -> None:
    moved = decode_bytes(11008, 4096, tenants=1, rows=1)
    assert moved == 11008 * 4096 * 2 + 128 * 11008 * 4 + 11008 * 4 + (4096 + 11008) * 2
    memory_bound = predict(H200, n=11008, k=4096, rows=1, bytes_moved=moved,
                           instructions_per_element=1.0)
    assert memory_bound.kernel_us == memory_bound.memory_us
    assert memory_bound.roofline_share == 1.0
    issue_bound = predict(H200, n=11008, k=4096, rows=16, bytes_moved=moved,
                          instructions_per_element=20.0)
    assert issue_bound.kernel_us == issue_bound.issue_us > issue_bound.memory_us
    assert issue_bound.roofline_share < 1.0
    assert dense_gemv_us(H200, n=11008, k=4096, launches=16) == pytest.approx(
        16 * 11008 * 4096 * 2 / H200.copy_bytes_per_s * 1e6)
