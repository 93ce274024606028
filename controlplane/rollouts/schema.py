"""Schema version 3: rollouts, their per-device deployments, each device's desired state, and the
tags an operator sets on a device.

``rollouts`` holds a rollout's spec (JSON columns for the selector, waves, gates and shadow policy)
and its progress (state, current wave, when the wave started and finished, the halt verdict, the
latest gate evaluation and the history of decisive ones). ``deployments`` is one row per device
that belongs to a rollout: its wave, its execution state, the generation of the desired state
that carries it, and ``previous`` (the device's entry for the model before the rollout: what a
rollback restores).
``desired`` is the unsigned desired-state document of each device and the generation last
published (the retained message); a row with ``published_generation < generation`` is published
again on every tick until the broker acknowledges it. ``devices.tag_overrides`` is a JSON object
of the operator's tags (a null value hides a tag the device reports).
"""

from sqlite_utils import Database


def v3_rollouts(db: Database) -> None:
    """Create the rollouts' tables."""
    db.table("rollouts").create(
        {
            "id": str, "model": str, "version": str, "seq": int, "selector": str, "waves": str,
            "bake_s": float, "gates": str, "min_sample": int, "on_halt": str,
            "device_timeout_s": float, "max_per_minute": int, "shadow": str, "state": str,
            "current_wave": int, "wave_started_at": float, "wave_finished_at": float,
            "halt": str, "evaluation": str, "created_at": float, "updated_at": float,
            "history": str,
        },
        pk="id",
        not_null=[
            "model", "version", "seq", "selector", "waves", "bake_s", "gates", "min_sample",
            "on_halt", "device_timeout_s", "state", "current_wave", "created_at", "updated_at",
            "history",
        ],
        defaults={"history": "[]"},
    )  # fmt: skip
    db.table("rollouts").create_index(["model", "state"])
    db.table("rollouts").create_index(["state"])
    db.table("deployments").create(
        {
            "rollout_id": str, "device_id": str, "wave": int, "state": str, "kind": str,
            "target": str, "generation": int, "attempts": int, "previous": str,
            "previous_version": str, "dispatched_at": float, "updated_at": float,
            "detail": str, "smoke": str, "shadow": str, "activated_at": float,
            "rollback_generation": int, "rollback_at": float,
        },
        pk=("rollout_id", "device_id"),
        not_null=["wave", "state", "attempts", "updated_at"],
        defaults={"attempts": 0},
        foreign_keys=[("rollout_id", "rollouts", "id")],
    )  # fmt: skip
    db.table("deployments").create_index(["device_id"])
    db.table("deployments").create_index(["rollout_id", "wave"])
    db.table("desired").create(
        {"device_id": str, "generation": int, "doc": str, "published_generation": int},
        pk="device_id",
        not_null=["generation", "doc", "published_generation"],
        defaults={"published_generation": 0},
    )
    db.table("devices").add_column("tag_overrides", str, not_null_default="{}")
