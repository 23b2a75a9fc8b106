"""PGD-K adversarial training on the word embeddings (zhuchen03/FreeLB's fairseq `--std-adv`).
Knobs: `siftkit.methods.pgd.settings`; the method: `siftkit.methods.pgd.method`; its page:
docs/methods/pgd.md."""
