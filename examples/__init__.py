"""Runnable examples of autoretrain and the simulated agent platform they share."""
