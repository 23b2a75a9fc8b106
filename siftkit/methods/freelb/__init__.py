"""FreeLB (Zhu et al., ICLR 2020): K ascent steps on the word embeddings, every step's loss in
one update. Knobs: `siftkit.methods.freelb.settings`; the method: `siftkit.methods.freelb.method`;
its page: docs/methods/freelb.md."""
