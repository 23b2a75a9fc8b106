"""ALUM (Liu et al. 2020): SMART's adversarial regularizer without the Bregman term, as
namisan/mt-dnn's ``alum/adv_masked_lm.py`` computes it. Knobs: `settings`; the loss: `method`."""
