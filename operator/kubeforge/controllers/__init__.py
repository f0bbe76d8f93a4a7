"""Thin kopf wiring: watch events trigger one level-triggered reconcile per object."""
