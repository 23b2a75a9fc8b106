"""R-Drop (Liang et al. 2021): two forwards of a batch with independent dropout, their
symmetric KL as a regularizer. Knobs: `settings`; the loss: `method`."""
