"""Where a run's records go: JSON Lines, the terminal, the live view, the HTML timeline."""
