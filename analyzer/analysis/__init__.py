"""What a run learns from decoded traffic: connections, the run itself, linking, redaction."""
