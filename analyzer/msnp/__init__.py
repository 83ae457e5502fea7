"""The sans-IO MSNP codec: bytes in, events out. No sockets, files, clocks or rich."""

from analyzer.msnp.events import C2S, S2C, Anomaly, Command, Skipped, encode_command
from analyzer.msnp.pairing import OUTCOMES, Transaction, TransactionTracker
from analyzer.msnp.reader import DEFAULT_MAX_LINE, DEFAULT_MAX_PAYLOAD, CommandReader, ProtocolState

__all__ = [
    "C2S", "S2C", "Anomaly", "Command", "Skipped", "encode_command",
    "OUTCOMES", "Transaction", "TransactionTracker",
    "DEFAULT_MAX_LINE", "DEFAULT_MAX_PAYLOAD", "CommandReader", "ProtocolState",
]
