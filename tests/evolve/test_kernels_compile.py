"""foolkit's Triton kernels compile for an H100 (sm_90) without one: Triton's own compiler and the
ptxas it ships turn them into a cubin here, on a machine with no GPU. The interpreter tests
(``TRITON_INTERPRET=1``) check what the kernels compute but run Python, which accepts code the
compiler refuses; this checks that the GPU gets a kernel at all, and that it neither spills to
local memory nor grows its registers back to the size that the render's activation chain once
had (153 registers, which let an H100 keep a third as many programs in flight); and that the
render's 8-bit rounding is the exact one (Triton's ``/`` is an approximate division)."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

triton = pytest.importorskip("triton")

from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from foolkit.evolve import cppn_fused, variation_fused  # noqa: E402

BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
RENDER = {"w_ptr": "*fp32", "act_ptr": "*i64", "codes_ptr": "*i32", "coords_ptr": "*fp32", "useful_ptr": "*i64",
          "out_ptr": "*fp32", "X": "i32"}
USEFUL = {"w_ptr": "*fp32", "out_ptr": "*i64", "output_bits": "i64"}
MUTATE = {"w_ptr": "*fp32", "on_ptr": "*u8", "act_ptr": "*i64", "alive_ptr": "*u8", "u_ptr": "*fp32",
          "rates_ptr": "*fp32", "seed_ptr": "*i64", "P": "i32", "wmax": "fp32", "split_weight": "fp32",
          "activation_rate": "fp32", "A": "i32"}
POLYNOMIAL = {"x_ptr": "*fp32", "mask_ptr": "*u8", "rate_ptr": "*fp32", "eta_ptr": "*fp32", "seed_ptr": "*i64",
              "u_ptr": "*fp32", "n": "i32", "row_len": "i32", "rate_value": "fp32", "eta_value": "fp32", "low": "fp32",
              "up": "fp32"}
SBX = {"a_ptr": "*fp32", "b_ptr": "*fp32", "seed_ptr": "*i64", "u_ptr": "*fp32", "n": "i32", "row_len": "i32",
       "pair_prob": "fp32", "gene_prob": "fp32", "eta": "fp32", "low": "fp32", "up": "fp32"}

CASES = {  # name: (kernel, signature, constexprs, warps, most registers: 255 is the hardware's cap)
    "render LeNet": (cppn_fused._render_kernel, RENDER,
                     {"N": 21, "OUTPUTS": 1, "ROWS": 32, "BLOCK_X": cppn_fused.BLOCK, "QUANTIZE": True,
                      "USE_FLAGS": True}, cppn_fused.WARPS, 96),
    "render LeNet, unrounded": (cppn_fused._render_kernel, RENDER,
                                {"N": 21, "OUTPUTS": 1, "ROWS": 32, "BLOCK_X": cppn_fused.BLOCK, "QUANTIZE": False,
                                 "USE_FLAGS": False}, cppn_fused.WARPS, 96),
    "render colour": (cppn_fused._render_kernel, RENDER,
                      {"N": 23, "OUTPUTS": 3, "ROWS": 32, "BLOCK_X": cppn_fused.BLOCK, "QUANTIZE": True,
                       "USE_FLAGS": True}, cppn_fused.WARPS, 96),
    "dead-end flags": (cppn_fused._useful_kernel, USEFUL, {"N": 21, "OUTPUTS": 1, "BLOCK_E": 512}, 4, 255),
    "mutate LeNet": (cppn_fused._mutate_kernel, MUTATE, {"N": 21, "OUTPUTS": 1, "BLOCK_E": 512, "BLOCK_S": 32}, 4,
                     255),
    "mutate colour, 40 hidden": (cppn_fused._mutate_kernel, MUTATE,
                                 {"N": 47, "OUTPUTS": 3, "BLOCK_E": 4096, "BLOCK_S": 64}, 8, 255),
    "polynomial": (variation_fused._polynomial_kernel, POLYNOMIAL,
                   {"HAS_MASK": True, "RATE_PER_ROW": True, "ETA_PER_ROW": True, "GIVEN_U": False,
                    "BLOCK_N": variation_fused.BLOCK}, 4, 255),
    "sbx": (variation_fused._sbx_kernel, SBX, {"GIVEN_U": False, "BLOCK_N": variation_fused.BLOCK}, 4, 255),
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_triton_kernels_compile_for_an_h100(name: str, tmp_path) -> None:
    kernel, signature, constexprs, warps, most_registers = CASES[name]
    source = ASTSource(kernel, {**signature, **{k: "constexpr" for k in constexprs}}, constexprs=constexprs)
    try:
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    except RuntimeError as e:  # pragma: no cover - a Triton build without its CUDA toolchain
        if "ptxas" in str(e) and not os.path.exists(BIN):
            pytest.skip(f"Triton has no ptxas here: {e}")
        raise
    if constexprs.get("QUANTIZE"):  # 8-bit levels as torch rounds them: ties to even, a correctly rounded division
        assert "cvt.rni.f32.f32" in compiled.asm["ptx"] and "div.rn.f32" in compiled.asm["ptx"]
    cuobjdump = os.path.join(BIN, "cuobjdump")
    if not os.path.exists(cuobjdump):  # pragma: no cover - Triton's wheels ship it
        pytest.skip("no cuobjdump beside Triton's ptxas: registers and spills not read")
    cubin = tmp_path / "kernel.cubin"
    cubin.write_bytes(compiled.asm["cubin"])
    usage = subprocess.run([cuobjdump, "--dump-resource-usage", str(cubin)], capture_output=True, text=True,
                           check=True).stdout
    registers, local = (int(v) for v in re.search(r"REG:(\d+) .*LOCAL:(\d+)", usage).groups())
    assert local == 0, usage  # nothing spilled to local memory
    assert registers <= most_registers, usage
