"""First-party plugins of msnp-analyzer (mime, p2p, challenge, chat).

They are registered in pyproject.toml under the entry-point group
`msnp_analyzer.plugins` and load exactly as third-party plugins do.
"""
