"""Layer 0: the 1-bit sign layout and the fused binary-GEMM kernels (torch and Triton only)."""
