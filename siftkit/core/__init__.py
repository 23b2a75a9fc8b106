"""The math: divergences, the embedding split, the adversarial regularizers and their perturbation rules, Bregman, smoothness, metrics (torch only)."""
