"""The operators' web console (docs/console.md): server-rendered pages over the store.

Pages are Jinja2 templates rendered on the server from the same store queries and controller
code the JSON API uses; every page reads without JavaScript, and a little plain JavaScript
(``controlplane/static/console.js``) converts times to the browser's time zone, draws the charts
with the vendored uPlot, and applies live updates pushed over server-sent events.

- :mod:`~controlplane.console.routes`: the route list that ``controlplane.app`` mounts.
- :mod:`~controlplane.console.templating`: the Jinja2 environment, filters, HTML error pages.
- :mod:`~controlplane.console.params`: query parameters of the pages (pure parsers).
- :mod:`~controlplane.console.series` and :mod:`~controlplane.console.scan`: chart series of at
  most ``MAX_POINTS`` points, from bounded reads of large tables.
- one module per page (:mod:`fleet`, :mod:`devices`, :mod:`device`, :mod:`models`,
  :mod:`rollouts`, :mod:`results`, :mod:`alerts`) and :mod:`live` for the SSE stream.
"""
