"""VAT (Miyato et al. 2017): settings in `.settings` (torch-free), the method in `.method`."""
