"""The live TCP proxy: relay, address rewriting on the wire, the analysis worker."""
