"""The dispatch loop: launching, supervising and judging worker attempts."""
