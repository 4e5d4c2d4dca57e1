import pytest
import torch

from loupe.core.vlm.device import choose_placement, cpu_flags, parse_dtype


def test_cpu_with_native_bf16_gets_bf16():
    assert choose_placement("cpu", flags={"avx512f", "avx512_bf16"}).dtype == torch.bfloat16
    assert choose_placement("cpu", flags={"amx_bf16"}).dtype == torch.bfloat16


def test_cpu_without_native_bf16_gets_fp32():
    assert choose_placement("cpu", flags={"avx512f", "avx2"}).dtype == torch.float32


def test_cuda_gets_bf16_and_overrides_win():
    assert choose_placement("cuda").dtype == torch.bfloat16
    assert choose_placement("cuda", "fp32").dtype == torch.float32
    assert choose_placement("cpu", "bf16", flags=set()).dtype == torch.bfloat16


def test_automatic_device_matches_hardware():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert choose_placement().device == expected


def test_cpu_flags_reads_this_machine():
    flags = cpu_flags()
    assert isinstance(flags, set)
    if flags:  # Linux: x86 or Arm flags are always listed
        assert len(flags) > 5


def test_unknown_dtype_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        parse_dtype("fp8")
