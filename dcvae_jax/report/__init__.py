"""Reports: figures, report.html and the paper's Table 1 over models (needs the `plots` extra for figures)."""
