"""Scripted MSNP sessions and the tools that turn them into sample files (transcripts, pcaps)."""
