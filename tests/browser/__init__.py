"""Tests that drive the example app as a person would: a real server and a real browser."""
