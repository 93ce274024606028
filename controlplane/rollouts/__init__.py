"""Rollouts: waves, gates, per-device deployments and the controller that drives them."""
