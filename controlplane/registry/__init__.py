"""The model registry: content-addressed artifacts, signed releases, the release key."""
