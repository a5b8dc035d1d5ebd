"""Chat platforms: the Channel seam and its Telegram implementation."""
