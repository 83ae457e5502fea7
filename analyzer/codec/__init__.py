"""The sans-IO MSNP codec: bytes in, events out. No sockets, files, clocks or rich."""

from analyzer.codec.events import C2S, S2C, Anomaly, Command, Skipped, encode_command
from analyzer.codec.pairing import OUTCOMES, Transaction, TransactionTracker
from analyzer.codec.reader import DEFAULT_MAX_LINE, DEFAULT_MAX_PAYLOAD, CommandReader, ProtocolState

__all__ = [
    "C2S", "S2C", "Anomaly", "Command", "Skipped", "encode_command",
    "OUTCOMES", "Transaction", "TransactionTracker",
    "DEFAULT_MAX_LINE", "DEFAULT_MAX_PAYLOAD", "CommandReader", "ProtocolState",
]
