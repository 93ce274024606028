"""The accelerator supervisor: inference in worker processes that may crash or hang.

libedgetpu aborts its whole process on a USB transfer error and a hung delegate never returns, so
an accelerator backend runs in a worker process of its own, watched by the agent (docs/agent.md,
"Supervised accelerator"):

- :mod:`~agent.supervisor.config`: the ``[supervisor]`` settings;
- :mod:`~agent.supervisor.decisions`: restart, demote, retry, promote, route, the inference limit
  and where a backend runs, as pure functions;
- :mod:`~agent.supervisor.channel`: the transport (marshal messages on a socket, tensors in
  shared memory);
- :mod:`~agent.supervisor.worker`: the child process;
- :mod:`~agent.supervisor.process`: the agent's handle on one child (two requests in flight);
- :mod:`~agent.supervisor.engines`: opening one backend, in a worker or in the agent;
- :mod:`~agent.supervisor.chain`: a model's backends in priority order and their states;
- :mod:`~agent.supervisor.supervised`: the runtime over the chain, and the background thread that
  restarts, demotes, retries and promotes;
- :mod:`~agent.supervisor.loading`: loading a model under supervision (the priority walk).

This package imports nothing heavy here: the worker process imports only what it needs.
"""
