"""Launchers start planned services and hand back handles that can be polled, read and stopped."""
