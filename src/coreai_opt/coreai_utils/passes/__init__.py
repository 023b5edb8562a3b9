"""Passes over Core AI programs."""
