"""msnp-analyzer: a man-in-the-middle traffic analyzer for the MSN Messenger Protocol."""

__version__ = "0.1.0"
