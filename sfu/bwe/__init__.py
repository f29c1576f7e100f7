"""Bandwidth estimation and allocation: pure code, time always an argument."""
