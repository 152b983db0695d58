"""Speed: fixed-shape padding and CUDA graphs that remove MACE's kernel-launch overhead."""
