"""Sub-commands that belong to the capture layers, registered on the main parser.

Each capture layer keeps its command-line glue next to itself and adds one
`register` call here, so `cli.py` stays the small common part.
"""

from __future__ import annotations


def register(sub) -> None:
    """Add every capture layer's sub-commands to the `msnp-analyzer` parser."""
    # In the order a newcomer needs them (argparse lists them as registered).
    from analyzer.cli.analyze import register as register_analyze; register_analyze(sub)  # noqa: E702
    from analyzer.cli.proxy import register as register_proxy; register_proxy(sub)  # noqa: E702
    from analyzer.cli.mitm import register as register_mitm; register_mitm(sub)  # noqa: E702
    from analyzer.cli.export import register as register_export; register_export(sub)  # noqa: E702
    from analyzer.cli.plugins import register as register_plugins; register_plugins(sub)  # noqa: E702
