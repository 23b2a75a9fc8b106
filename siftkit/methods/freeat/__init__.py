"""FreeAT, "adversarial training for free" (Shafahi et al. 2019) on the word embeddings, as
zhuchen03/FreeLB's fairseq code runs it (`--per-step-adv`). Knobs: `siftkit.methods.freeat.settings`;
the method: `siftkit.methods.freeat.method`; its page: docs/methods/freeat.md."""
