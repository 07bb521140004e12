"""Datasets: the SCARED layout DARES reads, and procedural scenes written in that layout."""
