"""Tests of the message life and the DIP protocol boundary."""
