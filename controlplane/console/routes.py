"""The console's routes (docs/console.md), mounted by ``controlplane.app`` beside the API's.

Pages answer HTML (errors too: an HTML page with the status); ``/events`` is the live-update
stream and answers its errors as JSON like the API; ``/static`` serves the stylesheet, the script
and the vendored chart library from ``controlplane/static``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from controlplane.console.alerts import alerts_page, run_diagnostic
from controlplane.console.device import device_page
from controlplane.console.devices import devices_page
from controlplane.console.fleet import fleet_page
from controlplane.console.live import events
from controlplane.console.models import models_page
from controlplane.console.results import give_feedback, results_page
from controlplane.console.rollout_actions import (
    confirm_action,
    do_action,
    new_rollout,
    start_rollout,
)
from controlplane.console.rollouts import rollout_page, rollouts_page
from controlplane.console.templating import STATIC_DIR


async def home(request: Request) -> Response:
    return RedirectResponse("/fleet", status_code=302)


routes: list[BaseRoute] = [
    Route("/", home, methods=["GET"]),
    Route("/fleet", fleet_page, methods=["GET"]),
    Route("/devices", devices_page, methods=["GET"]),
    Route("/devices/{id}", device_page, methods=["GET"]),
    Route("/devices/{id}/diagnostics", run_diagnostic, methods=["POST"]),
    Route("/models", models_page, methods=["GET"]),
    Route("/rollouts", rollouts_page, methods=["GET"]),
    Route("/rollouts/new", new_rollout, methods=["GET"]),
    Route("/rollouts/new", start_rollout, methods=["POST"]),
    Route("/rollouts/{id}", rollout_page, methods=["GET"]),
    Route("/rollouts/{id}/{action}", confirm_action, methods=["GET"]),
    Route("/rollouts/{id}/{action}", do_action, methods=["POST"]),
    Route("/alerts", alerts_page, methods=["GET"]),
    Route("/results", results_page, methods=["GET"]),
    Route("/results/feedback", give_feedback, methods=["POST"]),
    Route("/events", events, methods=["GET"]),
    Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
]
