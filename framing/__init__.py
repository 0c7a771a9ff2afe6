"""framing package."""
