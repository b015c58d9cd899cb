"""A static cost model of the kernels, read from the SASS ptxas produced (kernels/toolchain.py).

Counts instructions per weight element in the hot loop and predicts, per GPU, the larger of
issue time and copy time (at `copy_fraction` of HBM spec), stretched by the last wave. A
floor, not a measurement. See docs/codecs.md, "Kernels".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")
_BRANCH_TARGET = re.compile(r"0x([0-9a-f]+)")


@dataclass(frozen=True)
class Instruction:
    address: int
    opcode: str  # with modifiers, e.g. "LDG.E.128"
    operands: str

    @property
    def base(self) -> str:
        return self.opcode.split(".")[0]


@dataclass(frozen=True)
class Loop:
    start: int  # index of the first instruction of the body
    end: int  # index of the back branch (inclusive)
    depth: int = 0  # 0 for an outermost loop

    def contains(self, other: Loop) -> bool:
        return self.start <= other.start and other.end <= self.end and self != other


def parse_sass(sass: str) -> list[Instruction]:
    """The instructions of the (single) kernel in a `cuobjdump -sass` listing."""
    found = []
    for match in _INSTRUCTION.finditer(sass):
        found.append(Instruction(int(match.group(1), 16), match.group(3), match.group(4).strip()))
    return found


def find_loops(code: Sequence[Instruction]) -> list[Loop]:
    """Loops closed by a backward branch, with their nesting depth."""
    index_of = {ins.address: i for i, ins in enumerate(code)}
    spans = []
    for i, ins in enumerate(code):
        if ins.base != "BRA":
            continue
        target = _BRANCH_TARGET.search(ins.operands)
        if target and int(target.group(1), 16) < ins.address:
            start = index_of.get(int(target.group(1), 16))
            if start is not None:
                spans.append(Loop(start, i))
    nested = []
    for loop in spans:
        depth = sum(1 for other in spans if other.contains(loop))
        nested.append(Loop(loop.start, loop.end, depth))
    return nested


@dataclass(frozen=True)
class LoopCost:
    instructions: float  # per K step, per thread, nested loops weighted
    barriers: float
    shuffles: float
    loops: int


def k_step_cost(code: Sequence[Instruction], trips_by_depth: Sequence[float] = (1.0,)) -> LoopCost:
    """Instructions a thread issues per iteration of the outermost (K) loop that holds the
    most instructions. A loop nested in it at depth d runs `trips_by_depth[d]` times per K
    step, counted from the K loop: a row loop inside a tenant loop runs tenants × rows times."""
    loops = find_loops(code)
    if not loops:
        raise ValueError("no loop in this SASS: is it a kernel with a K loop?")
    outer = max((lp for lp in loops if lp.depth == 0), key=lambda lp: lp.end - lp.start)
    inner = [lp for lp in loops if outer.contains(lp)]
    weight = [1.0] * len(code)
    for loop in sorted(inner, key=lambda lp: lp.depth):
        trips = trips_by_depth[min(loop.depth, len(trips_by_depth) - 1)]
        for i in range(loop.start, loop.end + 1):
            weight[i] = trips
    body = range(outer.start, outer.end + 1)
    return LoopCost(
        instructions=sum(weight[i] for i in body),
        barriers=sum(weight[i] for i in body if code[i].base == "BAR"),
        shuffles=sum(weight[i] for i in body if code[i].base == "SHFL"),
        loops=1 + len(inner),
    )


@dataclass(frozen=True)
class Gpu:
    name: str
    sms: int
    boost_ghz: float
    hbm_tb_s: float  # spec
    copy_fraction: float = 0.90  # copy bandwidth as a share of spec, until measured

    @property
    def copy_bytes_per_s(self) -> float:
        return self.hbm_tb_s * 1e12 * self.copy_fraction

    @property
    def warp_issue_per_s(self) -> float:
        return self.sms * 4 * self.boost_ghz * 1e9  # four schedulers per SM, one issue each


H100 = Gpu("H100 SXM", sms=132, boost_ghz=1.98, hbm_tb_s=3.35)
H200 = Gpu("H200", sms=132, boost_ghz=1.98, hbm_tb_s=4.8)
GPUS = (H100, H200)


@dataclass(frozen=True)
class Prediction:
    gpu: Gpu
    bytes_moved: int
    instructions_per_element: float  # per thread, per (row × weight element)
    memory_us: float
    issue_us: float
    wave_efficiency: float = 1.0  # programs / (waves × resident programs per wave)

    @property
    def kernel_us(self) -> float:
        return max(self.memory_us, self.issue_us) / self.wave_efficiency

    @property
    def roofline_share(self) -> float:
        return self.memory_us / self.kernel_us


def resident_programs(gpu: Gpu, *, registers: int, threads: int, shared_bytes: int) -> int:
    """Programs (thread blocks) resident at once on the whole GPU: 64K registers per SM
    (allocated in steps of 8 per thread), 228 KiB of shared memory, 2048 threads."""
    per_sm = min(65536 // (max(-(-registers // 8) * 8, 8) * threads), 2048 // threads,
                 233_472 // shared_bytes if shared_bytes else 32, 32)
    return max(per_sm, 1) * gpu.sms


def wave_efficiency(programs: int, resident: int) -> float:
    """The share of the last wave's slots that hold work, spread over all waves: 172
    programs on 132 slots run two waves for 1.3 waves of work."""
    waves = -(-programs // resident)
    return programs / (waves * resident)


def predict(gpu: Gpu, *, n: int, k: int, rows: int, bytes_moved: int,
            instructions_per_element: float, waves: float = 1.0) -> Prediction:
    warp_instructions = instructions_per_element * n * k * rows / 32
    return Prediction(
        gpu=gpu, bytes_moved=bytes_moved, instructions_per_element=instructions_per_element,
        memory_us=bytes_moved / gpu.copy_bytes_per_s * 1e6,
        issue_us=warp_instructions / gpu.warp_issue_per_s * 1e6,
        wave_efficiency=waves,
    )


def decode_bytes(n: int, k: int, *, tenants: int, rows: int, weight_bytes: int = 2) -> int:
    """What a fused decode launch must move: W_base once, each tenant's bits and α, x and y."""
    words = -(-k // 32)
    return (n * k * weight_bytes + tenants * (words * n * 4 + n * 4)
            + rows * (k + n) * weight_bytes)


def dense_gemv_us(gpu: Gpu, *, n: int, k: int, launches: int, weight_bytes: int = 2) -> float:
    """`launches` dense GEMVs against materialised fine-tunes, each at copy bandwidth."""
    return launches * (n * k * weight_bytes) / gpu.copy_bytes_per_s * 1e6
