"""The `msnp-analyzer` command line: nothing imports this package."""
