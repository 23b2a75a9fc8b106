"""R3F and R4F (Aghajanyan et al. 2021): settings in `.settings` (torch-free), the method in `.method`."""
