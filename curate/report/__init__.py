"""Reports people look at: matplotlib PNGs and one self-contained, escaped HTML template."""
