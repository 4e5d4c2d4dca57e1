"""int8 linear layers for the CPU: int8 weights per output channel, int8 activations per token.

Each token's activations get their own scale and the product is accumulated in int32, which is exact.
So a token's output does not depend on which other tokens share the matrix product: a follow-up that
prefills only its new text computes the same numbers as a full prefill, and conversation reuse stays
token-for-token identical to the no-reuse path. (torch's ``quantize_dynamic`` scales activations per
tensor, so its outputs shift with the batch; it is also deprecated.) The product runs on
``torch._int_mm``, the int8 GEMM that torchao builds on.
"""

from __future__ import annotations

import torch
from torch import nn


def int8_matmul_available() -> bool:
    """True where torch's int8 GEMM runs on the CPU (checked by running it once)."""
    if not hasattr(torch, "_int_mm"):
        return False
    try:
        probe = torch.ones(2, 32, dtype=torch.int8)
        return bool(torch._int_mm(probe, probe.t().contiguous())[0, 0] == 32)
    except (RuntimeError, NotImplementedError):
        return False


def _symmetric_int8(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``values`` as int8 with one fp32 scale per row (the largest magnitude maps to 127)."""
    scale = torch.linalg.vector_norm(values, float("inf"), dim=-1, keepdim=True).clamp_(min=1e-8) / 127.0
    return (values * scale.reciprocal()).round_().to(torch.int8), scale


class Int8Linear(nn.Module):
    """A drop-in for ``nn.Linear`` at inference: same inputs and outputs, int8 arithmetic inside."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        quantized, scale = _symmetric_int8(weight)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight_t", quantized.t().contiguous())  # (in, out), as _int_mm wants it
        self.register_buffer("weight_scale", scale.view(1, -1))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype, shape = x.dtype, x.shape
        rows, row_scale = _symmetric_int8(x.reshape(-1, self.in_features).float())
        out = torch._int_mm(rows, self.weight_t).float().mul_(row_scale).mul_(self.weight_scale)
        if self.bias is not None:
            out.add_(self.bias)
        return out.view(*shape[:-1], self.out_features).to(dtype)

    @property
    def qweight(self) -> torch.Tensor:
        """The int8 weight under the name peft reads a quantised layer's device and dtype from."""
        return self.weight_t

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def quantize_linears(model: nn.Module) -> int:
    """Replace every ``nn.Linear`` under ``model`` by an ``Int8Linear`` in place; returns how many.

    A weight shared with another module (an output head tied to the embeddings) keeps its fp32 copy
    for the other user; the head gets an int8 copy of its own.
    """
    targets = [(parent, name, child) for parent in model.modules()
               for name, child in parent.named_children() if type(child) is nn.Linear]
    for parent, name, child in targets:
        setattr(parent, name, Int8Linear(child))
    # What stays in floating point (embeddings, norms, convolutions) may still live in the checkpoint's
    # memory map, which would keep every page of the fp32 file resident: give it memory of its own.
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.data = tensor.data.clone()
    return len(targets)
